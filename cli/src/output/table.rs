//! Tables for people, built with `tabled`: columns aligned by their width on screen (ANSI
//! colour codes take none: tabled's `ansi` feature), fitted to a width by cutting the
//! free-text columns with `…`, and no trailing spaces.
//!
//! [`render`] is the one way a table is printed: give it the rows (header first), which
//! columns hold free text that may be cut (commands, messages, values; never names, states,
//! versions, pids) and the width ([`super::Display::width`]: `None` with `--wide`).

use std::io::IsTerminal;
use tabled::builder::Builder;
use tabled::grid::util::string::get_text_width;
use tabled::settings::object::Columns;
use tabled::settings::width::Truncate;
use tabled::settings::{Padding, Style, Width};

/// The width of a table on anything but a terminal (a pipe, a file), and on a terminal
/// whose width cannot be found.
pub const DEFAULT_WIDTH: usize = 80;

/// A cut column keeps at least this many columns (all of them when it is narrower).
pub const MIN_CUT_WIDTH: usize = 12;

/// The width tables fit: on a terminal `$COLUMNS`, else the terminal's width; anywhere
/// else [`DEFAULT_WIDTH`], so what a script reads from a pipe does not depend on who ran it.
pub fn terminal_width() -> usize {
    let out = std::io::stdout();
    let columns = std::env::var("COLUMNS").ok();
    let terminal = terminal_size::terminal_size_of(&out).map(|(w, _)| usize::from(w.0));
    width_for(out.is_terminal(), columns.as_deref(), terminal)
}

/// [`terminal_width`] from what it looks at: whether stdout is a terminal, `$COLUMNS`, and
/// the terminal's own width.
pub fn width_for(tty: bool, columns: Option<&str>, terminal: Option<usize>) -> usize {
    if !tty {
        return DEFAULT_WIDTH;
    }
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&w| w > 0)
        .or(terminal.filter(|&w| w > 0))
        .unwrap_or(DEFAULT_WIDTH)
}

/// The widths of columns whose cells are `natural` wide, when the table is `excess` columns
/// too wide: the widest of the `cut` columns loses one column at a time, none below
/// [`MIN_CUT_WIDTH`]. Returns fewer than `excess` columns cut when that is all there is.
pub fn fit(natural: &[usize], cut: &[usize], excess: usize) -> Vec<usize> {
    let mut widths = natural.to_vec();
    for _ in 0..excess {
        let widest = cut
            .iter()
            .copied()
            .filter(|&c| c < widths.len() && widths[c] > natural[c].min(MIN_CUT_WIDTH))
            .max_by_key(|&c| (widths[c], std::cmp::Reverse(c)));
        match widest {
            Some(c) => widths[c] -= 1,
            None => break,
        }
    }
    widths
}

/// Renders `rows` (the header first) as a table with blank borders; with a `width`, the
/// columns listed in `cut` are shortened with `…` ([`fit`]) until the table fits or they
/// cannot give more. Every line ends without spaces, with a newline.
///
/// Laid out here, one pass per row: `tabled`'s grid measures every cell several times with
/// an ANSI parser, which made `ctl status` of 1,000 scripts cost twice its JSON. A table
/// with a cell of several lines goes through `tabled` (`render_grid`), and a property
/// test holds both to the same output.
pub fn render<S: AsRef<str>>(rows: Vec<Vec<S>>, cut: &[usize], width: Option<usize>) -> String {
    if rows.iter().flatten().any(|c| c.as_ref().contains('\n')) {
        let rows = rows
            .into_iter()
            .map(|row| row.iter().map(|c| c.as_ref().to_owned()).collect())
            .collect();
        return render_grid(rows, cut, width);
    }
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    if columns == 0 {
        return String::new();
    }
    let mut natural = vec![0; columns];
    let cell_widths: Vec<Vec<usize>> = rows
        .iter()
        .map(|row| row.iter().map(|c| cell_width(c.as_ref())).collect())
        .collect();
    for row in &cell_widths {
        for (w, &cell) in natural.iter_mut().zip(row) {
            *w = (*w).max(cell);
        }
    }
    // A space before each cell, and one between columns.
    let total = natural.iter().sum::<usize>() + (2 * columns).saturating_sub(1);
    let widths = match width {
        Some(limit) if total > limit => fit(&natural, cut, total - limit),
        _ => natural,
    };
    let mut out = String::with_capacity(rows.len() * (total + 1));
    let mut line = String::with_capacity(total + 8);
    for (row, row_widths) in rows.iter().zip(&cell_widths) {
        line.clear();
        for (col, &w) in widths.iter().enumerate() {
            let (cell, natural) = match row.get(col) {
                Some(cell) => (cell.as_ref(), row_widths[col]),
                None => ("", 0),
            };
            line.push_str(if col == 0 { " " } else { "  " });
            let shown_width = if natural > w {
                let keep = w.saturating_sub(1);
                // A plain cell is cut at a byte: its length is its width.
                let cut = if plain(cell) {
                    std::borrow::Cow::Borrowed(&cell[..keep.min(cell.len())])
                } else {
                    Truncate::truncate(cell, keep)
                };
                line.push_str(&cut);
                line.push('…');
                cell_width(&cut) + 1
            } else {
                line.push_str(cell);
                natural
            };
            line.extend(std::iter::repeat_n(' ', w.saturating_sub(shown_width)));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The width of a one-line cell on screen: its length when it is plain ASCII (most cells),
/// else measured with colour codes taking none.
fn cell_width(cell: &str) -> usize {
    if plain(cell) {
        cell.len()
    } else {
        get_text_width(cell)
    }
}

/// Whether `cell` is plain ASCII without escape codes: one column a byte.
fn plain(cell: &str) -> bool {
    cell.bytes().all(|b| b.is_ascii() && b != 0x1b)
}

/// [`render`] through `tabled`'s grid: for tables with cells of several lines.
fn render_grid(rows: Vec<Vec<String>>, cut: &[usize], width: Option<usize>) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut natural = vec![0; columns];
    for row in &rows {
        for (w, cell) in natural.iter_mut().zip(row) {
            *w = (*w).max(get_text_width(cell));
        }
    }
    let mut table = Builder::from(rows).build();
    // A space before each cell and none after: columns two apart, lines start with a space.
    table.with(Style::blank()).with(Padding::new(1, 0, 0, 0));
    if let Some(limit) = width {
        let total = table.total_width();
        if total > limit {
            let fitted = fit(&natural, cut, total - limit);
            for (col, (&w, &n)) in fitted.iter().zip(&natural).enumerate() {
                if w < n {
                    table.modify(Columns::one(col), Width::truncate(w).suffix("…"));
                }
            }
        }
    }
    trim_lines(&table.to_string())
}

/// `text` with every line's trailing spaces removed and a newline after each line.
pub fn trim_lines(text: &str) -> String {
    text.lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip_ansi(s: &str) -> String {
        let re = regex::Regex::new("\x1b\\[[0-9;]*m").expect("regex");
        re.replace_all(s, "").into_owned()
    }

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn fitting_cuts_the_widest_free_text_first() {
        // (natural widths, cut columns, excess, want)
        type Case = (&'static [usize], &'static [usize], usize, &'static [usize]);
        let table: [Case; 7] = [
            (&[5, 40, 10], &[1], 0, &[5, 40, 10]),
            (&[5, 40, 10], &[1], 8, &[5, 32, 10]),
            (&[5, 40, 30], &[1, 2], 20, &[5, 25, 25]),
            (&[5, 40, 30], &[1, 2], 21, &[5, 24, 25]),
            // Never below MIN_CUT_WIDTH, never a column not listed.
            (&[5, 40, 10], &[1], 100, &[5, 12, 10]),
            (&[30, 8], &[1], 10, &[30, 8]),
            (&[30, 8], &[], 10, &[30, 8]),
        ];
        for (natural, cut, excess, want) in table {
            assert_eq!(
                fit(natural, cut, excess),
                want,
                "{natural:?} {cut:?} {excess}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn fitting_takes_what_it_can_from_cut_columns_only(
            natural in proptest::collection::vec(0usize..200, 1..8),
            cut in proptest::collection::vec(0usize..8, 0..4),
            excess in 0usize..1000,
        ) {
            let got = fit(&natural, &cut, excess);
            let floor = |c: usize| natural[c].min(MIN_CUT_WIDTH);
            let mut room = 0;
            for (c, (&w, &n)) in got.iter().zip(&natural).enumerate() {
                if cut.contains(&c) {
                    proptest::prop_assert!(w >= floor(c) && w <= n);
                    room += n - floor(c);
                } else {
                    proptest::prop_assert_eq!(w, n);
                }
            }
            let taken: usize = natural.iter().zip(&got).map(|(n, w)| n - w).sum();
            proptest::prop_assert_eq!(taken, excess.min(room));
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_layout_is_tabled_s(
            rows in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::string::string_regex("[a-z0-9 .:é漢-]{0,30}|\x1b\\[3[12]m[a-z]{1,8}\x1b\\[0m")
                        .expect("regex"),
                    0..6,
                ),
                0..6,
            ),
            cut in proptest::collection::vec(0usize..6, 0..3),
            width in proptest::option::of(0usize..120),
        ) {
            proptest::prop_assert_eq!(
                render(rows.clone(), &cut, width),
                render_grid(rows, &cut, width)
            );
        }
    }

    #[test]
    fn the_width_is_the_terminals_only_on_a_terminal() {
        let table = [
            (false, Some("120"), Some(200), 80),
            (false, None, None, 80),
            (true, Some("120"), Some(200), 120),
            (true, None, Some(200), 200),
            (true, Some("wide"), Some(200), 200),
            (true, Some("0"), None, 80),
            (true, None, None, 80),
        ];
        for (tty, columns, terminal, want) in table {
            assert_eq!(
                width_for(tty, columns, terminal),
                want,
                "{tty} {columns:?} {terminal:?}"
            );
        }
    }

    #[test]
    fn a_long_cell_is_cut_to_the_width_and_others_are_whole() {
        let long = "x".repeat(200);
        let rows = vec![
            row(&["NAME", "STATE", "COMMAND"]),
            row(&["a-long-script-name", "backing-off", &long]),
        ];
        let text = render(rows.clone(), &[2], Some(80));
        for line in text.lines() {
            assert!(get_text_width(line) <= 80, "{line:?} is wider than 80");
            assert_eq!(line, line.trim_end(), "trailing spaces in {line:?}");
        }
        assert!(text.contains("a-long-script-name"), "{text}");
        assert!(text.contains("backing-off"), "{text}");
        assert!(text.contains("x…"), "{text}");
        let wide = render(rows, &[2], None);
        assert!(wide.contains(&long), "{wide}");
    }

    #[test]
    fn coloured_cells_align_as_plain_ones() {
        let paint = |s: &str| format!("\x1b[32m{s}\x1b[0m");
        let rows = |colour: bool| {
            let state = |s: &str| if colour { paint(s) } else { s.to_owned() };
            vec![
                row(&["NAME", "STATE", "MESSAGE"]),
                vec!["a".into(), state("running"), "ok".into()],
                vec!["bbbbbb".into(), state("failed"), "x".repeat(100)],
            ]
        };
        let plain = render(rows(false), &[2], Some(60));
        let coloured = render(rows(true), &[2], Some(60));
        assert_ne!(plain, coloured);
        assert_eq!(strip_ansi(&coloured), plain);
    }
}
