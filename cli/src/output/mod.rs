//! What `ctl` prints: `--output json` documents (their own serialisable types, each with
//! `"schema": 1`, in [`json`], laid out by [`pretty`]), the tables and lines people read ([`human`], laid out by
//! [`table`]), and how times and durations read ([`time`](mod@time)).
//!
//! How this invocation shows tables and times (`--wide`, `--local`) is a [`Display`] chosen
//! once from the command line before anything is printed ([`set_display`]); the renderers
//! read it, so a table reads the same from every command.

pub mod human;
pub mod json;
pub mod names;
pub mod pretty;
pub mod table;
pub mod time;

pub use human::{changes_table, error_text, event_line, exit_text, status_table};
pub use json::*;
pub use names::*;
pub use time::{relative, shown_time, time};

use crate::error::{CtlError, FAILURE};
use jiff::tz::TimeZone;
use std::io::IsTerminal;
use std::sync::OnceLock;

/// Whether to colour: a terminal, and no `NO_COLOR`.
pub fn colour_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// Wraps `text` in an ANSI colour when `on`.
pub fn paint(text: &str, code: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// How tables and times are shown in this invocation.
#[derive(Debug, Clone)]
pub struct Display {
    /// Columns a table may take; `None` (`--wide`): as wide as its cells.
    pub width: Option<usize>,
    /// Time zone of the times people read (`--local`); `None`: UTC, RFC 3339.
    pub zone: Option<TimeZone>,
}

impl Default for Display {
    /// What a pipe gets: 80 columns, UTC.
    fn default() -> Self {
        Self {
            width: Some(table::DEFAULT_WIDTH),
            zone: None,
        }
    }
}

impl Display {
    /// The display the flags ask for: `wide` uncut tables, else the terminal's width
    /// ([`table::terminal_width`]); `local` the system's time zone (`TZ`, else
    /// `/etc/localtime`), an error when it cannot be found.
    pub fn from_flags(wide: bool, local: bool) -> Result<Self, CtlError> {
        let zone = if local {
            Some(TimeZone::try_system().map_err(|e| {
                CtlError::new(
                    FAILURE,
                    format!(
                        "--local: cannot tell the local time zone ({e}); set TZ (TZ=Europe/Paris) \
                         or point /etc/localtime at a zone"
                    ),
                )
            })?)
        } else {
            None
        };
        Ok(Self {
            width: (!wide).then(table::terminal_width),
            zone,
        })
    }
}

static DISPLAY: OnceLock<Display> = OnceLock::new();

/// Sets this invocation's display; the first call wins (ctl makes one, at start).
pub fn set_display(d: Display) {
    // A second call (none in ctl) keeps the first choice: the output stays consistent.
    let _ = DISPLAY.set(d);
}

/// This invocation's display ([`Display::default`] until [`set_display`]).
pub fn display() -> &'static Display {
    DISPLAY.get_or_init(Display::default)
}
