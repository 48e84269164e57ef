//! The rules, without any server: a 7 x 6 board, pieces dropped into columns, four
//! in a row wins, a full board draws. The game room (`game`) is the only user.

use crate::wire::Colour;

/// Columns, numbered 0 to 6 from the left.
pub const COLUMNS: usize = 7;
/// Rows, numbered 0 (the bottom) to 5.
pub const ROWS: usize = 6;

/// Why a move cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveError {
    /// There is no such column.
    NoSuchColumn,
    /// The column has [`ROWS`] pieces.
    ColumnFull,
}

/// A board and whose move it is (red moves first, then they take turns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Board {
    /// `cells[column][row]`, `None` where empty.
    cells: [[Option<Colour>; ROWS]; COLUMNS],
    moves: u8,
}

impl Board {
    /// Whose move it is.
    pub fn to_move(&self) -> Colour {
        if self.moves.is_multiple_of(2) {
            Colour::Red
        } else {
            Colour::Yellow
        }
    }

    /// Whether every cell has a piece.
    pub fn is_full(&self) -> bool {
        usize::from(self.moves) == COLUMNS * ROWS
    }

    /// Drops the mover's piece into `column`; returns the row it lands in. Turns are
    /// the caller's business (the room checks who asks before calling this).
    pub fn drop_piece(&mut self, column: usize) -> Result<usize, MoveError> {
        let mover = self.to_move();
        let cells = self.cells.get_mut(column).ok_or(MoveError::NoSuchColumn)?;
        let row = cells
            .iter()
            .position(Option::is_none)
            .ok_or(MoveError::ColumnFull)?;
        cells[row] = Some(mover);
        self.moves += 1;
        Ok(row)
    }

    /// Whether the piece at (`column`, `row`) is part of four (or more) in a row of its
    /// colour: horizontally, vertically or on either diagonal. Checking the last piece
    /// dropped is enough, since no earlier move won.
    pub fn wins_at(&self, column: usize, row: usize) -> bool {
        let Some(colour) = self.cell(column as isize, row as isize) else {
            return false;
        };
        let run = |dc: isize, dr: isize| {
            (1..4)
                .take_while(|i| {
                    self.cell(column as isize + dc * i, row as isize + dr * i) == Some(colour)
                })
                .count()
        };
        [(1, 0), (0, 1), (1, 1), (1, -1)]
            .iter()
            .any(|&(dc, dr)| 1 + run(dc, dr) + run(-dc, -dr) >= 4)
    }

    fn cell(&self, column: isize, row: isize) -> Option<Colour> {
        let column = usize::try_from(column).ok()?;
        let row = usize::try_from(row).ok()?;
        *self.cells.get(column)?.get(row)?
    }

    /// The cells as MOVED sends them: bottom row first, left to right; 0 empty, 1 red,
    /// 2 yellow.
    pub fn to_bytes(&self) -> Vec<u8> {
        (0..ROWS)
            .flat_map(|row| (0..COLUMNS).map(move |column| (column, row)))
            .map(|(column, row)| self.cells[column][row].map_or(0, |c| c as u8))
            .collect()
    }
}

/// A whole game that ends in a draw: 42 moves, never four in a row.
pub const A_DRAWN_GAME: [u8; 42] = [
    0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 5, 5,
    5, 5, 5, 5, 6, 6, 6, 6, 6, 6,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays `columns`; the row of each move and whether it won.
    fn play(board: &mut Board, columns: &[usize]) -> Vec<(usize, bool)> {
        columns
            .iter()
            .map(|&c| {
                let row = board.drop_piece(c).unwrap();
                (row, board.wins_at(c, row))
            })
            .collect()
    }

    #[test]
    fn pieces_stack_and_turns_alternate() {
        let mut board = Board::default();
        assert_eq!(board.to_move(), Colour::Red);
        assert_eq!(
            play(&mut board, &[3, 3, 3]),
            [(0, false), (1, false), (2, false)]
        );
        assert_eq!(board.to_move(), Colour::Yellow);
        let bytes = board.to_bytes();
        assert_eq!((bytes[3], bytes[7 + 3], bytes[14 + 3]), (1, 2, 1));
        assert_eq!(bytes.iter().filter(|&&b| b != 0).count(), 3);
    }

    #[test]
    fn four_in_a_row_wins_in_every_direction() {
        // Red's moves are the even ones; yellow fills in elsewhere.
        let vertical = [0, 1, 0, 1, 0, 1, 0];
        let horizontal = [0, 0, 1, 1, 2, 2, 3];
        let rising = [0, 1, 1, 2, 2, 3, 2, 3, 3, 6, 3];
        let falling = [6, 5, 5, 4, 4, 3, 4, 3, 3, 0, 3];
        for game in [&vertical[..], &horizontal, &rising, &falling] {
            let mut board = Board::default();
            let results = play(&mut board, game);
            let (last, earlier) = results.split_last().unwrap();
            assert!(last.1, "{game:?} wins with its last move");
            assert!(earlier.iter().all(|(_, won)| !won), "{game:?} not earlier");
        }
    }

    #[test]
    fn a_full_column_and_a_missing_one_are_refused() {
        let mut board = Board::default();
        play(&mut board, &[2; ROWS]);
        assert_eq!(board.drop_piece(2), Err(MoveError::ColumnFull));
        assert_eq!(board.drop_piece(COLUMNS), Err(MoveError::NoSuchColumn));
        assert_eq!(board.to_move(), Colour::Red, "refused moves change nothing");
    }

    #[test]
    fn the_drawn_game_fills_the_board_without_a_winner() {
        let mut board = Board::default();
        let columns: Vec<usize> = A_DRAWN_GAME.iter().map(|&c| usize::from(c)).collect();
        assert!(play(&mut board, &columns).iter().all(|(_, won)| !won));
        assert!(board.is_full());
    }
}
