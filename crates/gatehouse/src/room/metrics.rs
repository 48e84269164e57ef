//! The rooms' metrics (feature `metrics`): one collector for every room type a
//! server owns, labelled `kind`.

use std::fmt;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::{Room, RoomStats, Rooms};
use crate::connection::ConnId;
use crate::metrics::{encode_histograms, encode_labelled, HistogramSnapshot};

impl<R: Room> Rooms<R> {
    /// What [`RoomMetrics`] reports of this registry.
    fn reading(&self) -> RoomsReading {
        let rooms = self.list();
        let lateness = self.lateness_histogram();
        RoomsReading {
            rooms: rooms.len(),
            members: rooms.iter().map(|r| r.members).sum(),
            late: lateness.late(),
            crashes: lateness.crashes.load(Ordering::Relaxed),
            lateness: lateness.buckets(&TICK_LATENESS_BUCKETS),
        }
    }
}

/// Upper bounds of the tick lateness histogram's buckets, in seconds.
const TICK_LATENESS_BUCKETS: [f64; 10] =
    [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];

/// One room type's numbers at one moment.
pub(crate) struct RoomsReading {
    pub(crate) rooms: usize,
    pub(crate) members: usize,
    pub(crate) late: u64,
    pub(crate) crashes: u64,
    pub(crate) lateness: HistogramSnapshot,
}

type Reader = Box<dyn Fn() -> RoomsReading + Send + Sync>;
type Lister = Box<dyn Fn() -> Vec<RoomStats> + Send + Sync>;
type SeatReader = Box<dyn Fn(ConnId) -> Option<String> + Send + Sync>;

/// The metrics of every room type of a server, labelled `kind`, as one collector
/// (the server makes it from its [`Server::with_rooms`](crate::Server::with_rooms)):
/// rooms running, members, ticks, late ticks, crashes and the tick lateness histogram
/// (`docs/OPERATIONS.md`). One collector for all types, since a metric family may
/// appear only once in a scrape.
#[derive(Default)]
pub(crate) struct RoomMetrics {
    kinds: Vec<(&'static str, Reader)>,
    lists: Vec<(&'static str, Lister)>,
    seats: Vec<SeatReader>,
}

impl RoomMetrics {
    /// Adds the rooms of one type, as `kind`.
    pub(crate) fn add<R: Room>(&mut self, kind: &'static str, rooms: &Rooms<R>) {
        let reading = rooms.clone();
        self.kinds.push((kind, Box::new(move || reading.reading())));
        let listing = rooms.clone();
        self.lists.push((kind, Box::new(move || listing.list())));
        let rooms = rooms.clone();
        self.seats
            .push(Box::new(move |member| rooms.room_of(member)));
    }

    /// The rooms `member` is in, of every type.
    pub(crate) fn rooms_of(&self, member: ConnId) -> Vec<String> {
        self.seats
            .iter()
            .filter_map(|room_of| room_of(member))
            .collect()
    }

    /// Every running room of every type, with its type's kind.
    pub(crate) fn list(&self) -> Vec<(&'static str, RoomStats)> {
        self.lists
            .iter()
            .flat_map(|(kind, list)| list().into_iter().map(move |room| (*kind, room)))
            .collect()
    }

    /// Whether no room type was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Every room type's numbers now.
    pub(crate) fn readings(&self) -> Vec<(&'static str, RoomsReading)> {
        self.kinds
            .iter()
            .map(|(kind, read)| (*kind, read()))
            .collect()
    }
}

impl fmt::Debug for RoomMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self.kinds.iter().map(|(kind, _)| *kind).collect();
        f.debug_struct("RoomMetrics")
            .field("kinds", &kinds)
            .finish()
    }
}

impl Collector for RoomMetrics {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        use prometheus_client::metrics::MetricType::{Counter, Gauge};
        let readings = self.readings();
        let each = |value: fn(&RoomsReading) -> f64| {
            readings.iter().map(move |(kind, r)| (*kind, value(r)))
        };
        encode_labelled(
            &mut e,
            "gatehouse_rooms",
            "Rooms running",
            Gauge,
            "kind",
            each(|r| r.rooms as f64),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_room_members",
            "Members of the running rooms",
            Gauge,
            "kind",
            each(|r| r.members as f64),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_room_ticks",
            "Ticks run by every room",
            Counter,
            "kind",
            each(|r| r.lateness.count as f64),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_room_late_ticks",
            "Ticks that started later than their room's late_after",
            Counter,
            "kind",
            each(|r| r.late as f64),
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_room_crashes",
            "Room crashes (each restarted, or closed past its restart intensity)",
            Counter,
            "kind",
            each(|r| r.crashes as f64),
        )?;
        encode_histograms(
            &mut e,
            "gatehouse_room_tick_lateness_seconds",
            "How late each tick started",
            "kind",
            readings.iter().map(|(kind, r)| (*kind, &r.lateness)),
        )
    }
}
