//! The client's terminal: the lines the player types, and the lines printed for them.
//!
//! On a terminal (stdin and stdout both), a line editor (rustyline): the usual
//! editing keys, and up/down recall this session's earlier lines (kept in memory,
//! never written to a file). A line printed while the player types goes above the
//! line being typed, which is drawn again below it. Otherwise (a pipe, a file,
//! `TERM=dumb`) plain lines in and out, as a script expects.
//!
//! The editor's `readline` blocks, so it runs on a thread of its own, and reads a
//! line only when one is wanted; printing has a thread too, so that a line the editor
//! is slow to take (it holds them while the player searches the history) never
//! stalls the connection. The editor puts the terminal in raw mode while it reads:
//! if the client ends then (a kick), [`Console::close`] interrupts it with SIGINT,
//! which it catches while it reads, and waits for it to give the terminal back, so
//! that no way of ending the client leaves the terminal raw.

use std::io::{BufRead as _, Write as _};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustyline::{Config, DefaultEditor, ExternalPrinter};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

/// Lines typed and not yet run; lines to print not yet printed.
const QUEUE: usize = 64;
const PROMPT: &str = "> ";
/// How long [`Console::close`] waits for the editor to give the terminal back.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

pub(super) struct Console {
    typed: mpsc::Receiver<String>,
    out: Out,
    printer: JoinHandle<()>,
    /// On a terminal.
    editor: Option<Editor>,
}

/// The line editor's thread.
struct Editor {
    thread: JoinHandle<()>,
    /// Asks it for a line: it does not read (the terminal raw) unless one is wanted,
    /// so that after `/quit` there is nothing to interrupt.
    want: SyncSender<()>,
    /// A line asked for has not come yet.
    asked: bool,
    /// SIGINT, caught for the whole run: outside the editor's hands it would kill
    /// the process (the terminal raw, perhaps). Ctrl-C while a command runs.
    interrupts: Signal,
}

/// Prints lines for the player, in order. `None` stops the printer.
#[derive(Clone)]
pub(super) struct Out(mpsc::Sender<Option<String>>);

impl Out {
    pub(super) async fn line(&self, text: impl Into<String>) {
        // (It fails only once the console is closed: nobody is reading any more.)
        let _ = self.0.send(Some(text.into())).await;
    }
}

impl Console {
    /// The line editor if stdin and stdout are a terminal it can drive, else plain
    /// lines.
    pub(super) fn open() -> Console {
        let (typing, typed) = mpsc::channel(QUEUE);
        let (out, mut printing) = mpsc::channel::<Option<String>>(QUEUE);
        let (mut print, editor): (Box<dyn FnMut(String) + Send>, _) = match line_editor() {
            Some((editor, mut printer, interrupts)) => {
                let (want, wanted) = sync_channel(1);
                let thread = std::thread::spawn(|| edit(editor, wanted, typing));
                let print = move |line| {
                    let _ = printer.print(format!("{line}\n"));
                };
                let editor = Editor {
                    thread,
                    want,
                    asked: false,
                    interrupts,
                };
                (Box::new(print), Some(editor))
            }
            None => {
                std::thread::spawn(|| read_lines(typing));
                let print = |line| {
                    let _ = writeln!(std::io::stdout(), "{line}");
                };
                (Box::new(print), None)
            }
        };
        let printer = std::thread::spawn(move || {
            while let Some(Some(line)) = printing.blocking_recv() {
                print(line);
            }
        });
        Console {
            typed,
            out: Out(out),
            printer,
            editor,
        }
    }

    pub(super) fn out(&self) -> Out {
        self.out.clone()
    }

    /// The next line typed; `None` at the end of input: Ctrl-D, Ctrl-C, a closed pipe.
    pub(super) async fn next_line(&mut self) -> Option<String> {
        let Some(editor) = &mut self.editor else {
            return self.typed.recv().await;
        };
        if !editor.asked {
            // (At most one is asked for: the channel has room.)
            let _ = editor.want.try_send(());
            editor.asked = true;
        }
        tokio::select! {
            line = self.typed.recv() => {
                editor.asked = false;
                line
            }
            // Ctrl-C while the editor is not reading (a command is running).
            _ = editor.interrupts.recv() => None,
        }
    }

    /// Prints what is left to print and gives the terminal back: the last thing
    /// before exiting.
    pub(super) async fn close(self) {
        let Console {
            typed,
            out,
            printer,
            editor,
        } = self;
        drop(typed);
        let _ = out.0.send(None).await;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = printer.join();
            let Some(Editor { thread, want, .. }) = editor else {
                return;
            };
            // That ends it if it is not reading; if it is, SIGINT does. (A line
            // printed in the instant before may be lost: the editor takes a signal
            // before a line to print.)
            drop(want);
            let deadline = Instant::now() + CLOSE_PATIENCE;
            while !thread.is_finished() && Instant::now() < deadline {
                let _ = nix::sys::signal::raise(nix::sys::signal::SIGINT);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .await;
    }
}

/// The editor, a printer that prints above the line being typed, and SIGINT caught;
/// `None` unless stdin and stdout are a terminal that the editor can drive.
fn line_editor() -> Option<(DefaultEditor, impl ExternalPrinter + Send, Signal)> {
    let config = Config::builder().auto_add_history(true).build();
    let mut editor = DefaultEditor::with_config(config).ok()?;
    let printer = editor.create_external_printer().ok()?;
    let interrupts = signal(SignalKind::interrupt()).ok()?;
    Some((editor, printer, interrupts))
}

/// Reads a line with the editor each time one is wanted, until Ctrl-C, Ctrl-D (or an
/// error) or the console closes.
fn edit(mut editor: DefaultEditor, wanted: Receiver<()>, typing: mpsc::Sender<String>) {
    while wanted.recv().is_ok() {
        let Ok(line) = editor.readline(PROMPT) else {
            return;
        };
        if typing.blocking_send(line).is_err() {
            return;
        }
    }
}

/// Reads stdin line by line until it ends. Bytes that are not UTF-8 are replaced,
/// not the end of input.
fn read_lines(typing: mpsc::Sender<String>) {
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    while matches!(stdin.read_until(b'\n', &mut line), Ok(n) if n > 0) {
        let text = String::from_utf8_lossy(&line).into_owned();
        line.clear();
        if typing.blocking_send(text).is_err() {
            return;
        }
    }
}
