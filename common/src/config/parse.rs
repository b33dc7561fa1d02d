//! Parsing one config file into a YAML value, safely: nesting depth is checked before the
//! full parse, a leading byte-order mark is accepted, and every error has a position inside
//! the file.

use super::limits::MAX_DEPTH;
use serde_yaml::Value;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// A file that is not one YAML document scriptd can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid YAML: {message}")]
pub struct YamlError {
    /// 1-based line, inside the file.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// What is wrong (and what to do).
    pub message: String,
}

/// `text` without a leading UTF-8 byte-order mark (which some Windows editors write).
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Parses `text` (one YAML document, optionally with a byte-order mark) into a value.
///
/// Nesting deeper than [`MAX_DEPTH`] is refused where it happens, before the full parse
/// (whose cost grows with the square of the depth). A cheap bound on the depth
/// ([`depth_bound`]) rules it out for every real config, which is then parsed once; only a
/// text the bound cannot clear is first read as a stream of events to find where it gets too
/// deep. What the full parse reports without a position (a second document, aliases
/// expanding too much) is placed with that event stream, read only then.
pub fn document(text: &str) -> Result<Value, YamlError> {
    let text = strip_bom(text);
    if depth_bound(text) > MAX_DEPTH {
        if let Some(e) = Scan::of(text).refusal {
            return Err(clamp(text, e));
        }
    }
    serde_yaml::from_str::<Value>(text).map_err(|e| {
        let message = strip_location(&e.to_string()).to_owned();
        let (line, column, message) = match e.location() {
            Some(l) => (l.line() as u32, l.column() as u32, message),
            None => Scan::of(text).place(message),
        };
        clamp(
            text,
            YamlError {
                line,
                column,
                message,
            },
        )
    })
}

/// An upper bound, from one pass over the bytes, such that a text within it is one the
/// event scan of [`document`] would not refuse: no collection opened deeper than
/// [`MAX_DEPTH`], and no syntax error it must keep from the full parse (it refuses one only
/// when the collections open there plus [`flow_depth_bound`] exceed [`MAX_DEPTH`]).
///
/// Block collections: each one's indentation is a column greater than its parent's, except
/// a sequence that is a mapping's value (`key:` then `- item` at the key's column), so they
/// nest at most twice as deep as the number of columns a block collection can start at. A
/// block collection starts at a line's first key, `-` or `?`, which stands at or before the
/// end of the line's prefix of spaces, tabs and `-`, `?`, `:` indicators: the longest such
/// prefix bounds those columns. Flow collections (`[`, `{`) are counted by
/// [`flow_depth_bound`], twice (open at the error, and in the scan's rule).
pub(crate) fn depth_bound(text: &str) -> usize {
    let widest_prefix = text
        .split('\n')
        .map(|line| {
            line.bytes()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'-' | b'?' | b':'))
                .count()
        })
        .max()
        .unwrap_or(0);
    2 * (widest_prefix + 1) + 2 * flow_depth_bound(text)
}

/// serde_yaml appends " at line L column C" to its messages; the position is reported
/// separately.
fn strip_location(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// A position past the end of the text (where a parser reports the end of a file without a
/// final newline: the line after its last one) moved to just after its last character. After
/// a final newline the empty line that follows is a position an editor shows.
fn clamp(text: &str, mut e: YamlError) -> YamlError {
    let lines = text.split('\n').count();
    let last = text.rsplit('\n').next().unwrap_or("");
    let end_column = last.chars().count() as u32 + 1;
    if e.line == 0 || e.line as usize > lines {
        e.line = lines as u32;
        e.column = end_column;
    } else if e.line as usize == lines {
        e.column = e.column.clamp(1, end_column);
    }
    e.column = e.column.max(1);
    e
}

/// What one pass over the event stream learned.
#[derive(Debug, Default)]
struct Scan {
    /// Too deep (or a syntax error the full parse must not be run after).
    refusal: Option<YamlError>,
    /// Where each document starts.
    documents: Vec<Marker>,
    /// Every alias: where it is and how many alias expansions the full parse has made once
    /// it is expanded (its own and all before it, nested ones included).
    aliases: Vec<(Marker, u64)>,
    /// Node events (scalars, aliases, collection starts and ends).
    events: u64,
}

/// One open collection during the scan.
struct Open {
    anchor: usize,
    expansions: u64,
}

impl Scan {
    fn of(text: &str) -> Self {
        let mut scan = Scan::default();
        let mut parser = Parser::new_from_str(text);
        let mut open: Vec<Open> = Vec::new();
        // Expansions made by each anchored node when it is expanded, by anchor id.
        let mut anchors: std::collections::HashMap<usize, u64> = Default::default();
        let mut total = 0u64;
        // Where the text after the last event starts (in characters): the scanner reads
        // ahead of the events.
        let mut resume = 0;
        loop {
            let (event, mark) = match parser.next_token() {
                Ok(next) => next,
                Err(e) => {
                    scan.refusal = refuse_after_error(text, &e, resume, open.len());
                    return scan;
                }
            };
            resume = match event {
                // Past the bracket that opened it, which `open` counts.
                Event::MappingStart(..) | Event::SequenceStart(..) => mark.index() + 1,
                _ => mark.index(),
            };
            match event {
                Event::StreamEnd => return scan,
                Event::DocumentStart => scan.documents.push(mark),
                Event::Scalar(_, _, anchor, _) => {
                    scan.events += 1;
                    if anchor != 0 {
                        anchors.insert(anchor, 0);
                    }
                }
                Event::Alias(id) => {
                    scan.events += 1;
                    let expansions = anchors.get(&id).copied().unwrap_or(0).saturating_add(1);
                    total = total.saturating_add(expansions);
                    scan.aliases.push((mark, total));
                    add_to_parent(&mut open, expansions);
                }
                Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                    scan.events += 1;
                    if open.len() >= MAX_DEPTH {
                        // A block mapping is marked at its first `:`: point at its first key.
                        let at = match parser.next_token() {
                            Ok((Event::Scalar(..), key)) if key.index() < mark.index() => key,
                            _ => mark,
                        };
                        scan.refusal = Some(too_deep(at));
                        return scan;
                    }
                    open.push(Open {
                        anchor,
                        expansions: 0,
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    scan.events += 1;
                    if let Some(node) = open.pop() {
                        if node.anchor != 0 {
                            anchors.insert(node.anchor, node.expansions);
                        }
                        add_to_parent(&mut open, node.expansions);
                    }
                }
                _ => {}
            }
        }
    }

    /// A position for an error the full parse reported without one.
    fn place(&self, message: String) -> (u32, u32, String) {
        let at = |m: &Marker| (m.line() as u32, m.col() as u32 + 1);
        if message.contains("more than one document") {
            if let Some(second) = self.documents.get(1) {
                let (line, column) = at(second);
                return (
                    line,
                    column,
                    "a second YAML document starts here; a config file holds one document: \
                     remove the `---` line or move what follows it to its own file"
                        .to_owned(),
                );
            }
        }
        if message.contains("repetition limit") {
            // The full parse gives up after 100 expansions per event of the document.
            let limit = self.events.saturating_mul(100);
            let crossing = self
                .aliases
                .iter()
                .find(|(_, total)| *total > limit)
                .or(self.aliases.last());
            if let Some((mark, _)) = crossing {
                let (line, column) = at(mark);
                return (
                    line,
                    column,
                    "aliases expand to too many nodes (more than 100 per node of the file, as \
                     in a \"billion laughs\"); write the values out instead of nesting aliases"
                        .to_owned(),
                );
            }
        }
        (0, 0, message)
    }
}

/// Counts the expansions of a finished node in the collection holding it.
fn add_to_parent(open: &mut [Open], expansions: u64) {
    if let Some(parent) = open.last_mut() {
        parent.expansions = parent.expansions.saturating_add(expansions);
    }
}

fn too_deep(mark: Marker) -> YamlError {
    too_deep_at(mark.line() as u32, mark.col() as u32 + 1)
}

fn too_deep_at(line: u32, column: u32) -> YamlError {
    YamlError {
        line,
        column,
        message: format!(
            "nested deeper than {MAX_DEPTH} levels (the limit for a config file; a scriptd \
             config needs 5): look for an unclosed `[` or `{{`, or lists or mappings nested \
             without end (`- - - ...`), before this point"
        ),
    }
}

/// After the event stream stopped at a syntax error, `depth` collections deep, its events
/// covering the text before character `resume`: the refusal, if the full parse must not see the text. It would report the
/// same error with its own message, unless the two parsers disagree; then the text after the
/// error has not been checked, and only a text that cannot nest deeper than [`MAX_DEPTH`]
/// goes to the full parse.
fn refuse_after_error(
    text: &str,
    e: &yaml_rust2::scanner::ScanError,
    resume: usize,
    depth: usize,
) -> Option<YamlError> {
    let mark = *e.marker();
    if e.info() == "recursion limit exceeded" {
        // The scanner's own limit (far past ours), hit while reading ahead of the events:
        // point at the bracket that opens level MAX_DEPTH + 1 instead.
        return Some(match deepest_bracket(text, resume, depth) {
            Some((line, column)) => too_deep_at(line, column),
            None => too_deep(mark),
        });
    }
    if depth + flow_depth_bound(text) <= MAX_DEPTH {
        return None;
    }
    Some(YamlError {
        line: mark.line() as u32,
        column: mark.col() as u32 + 1,
        message: e.info().to_owned(),
    })
}

/// Line and column of the `[` or `{` from character `from` on that opens level
/// [`MAX_DEPTH`] + 1, `depth` levels being open before `from`; brackets are counted wherever
/// they are, so this is for texts known to nest far deeper.
fn deepest_bracket(text: &str, from: usize, mut depth: usize) -> Option<(u32, u32)> {
    let (mut line, mut column) = (1u32, 0u32);
    for (i, c) in text.chars().enumerate() {
        if c == '\n' {
            (line, column) = (line + 1, 0);
            continue;
        }
        column += 1;
        if i < from {
            continue;
        }
        match c {
            '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some((line, column));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// An upper bound of how deep the flow collections of `text` nest: every `[` and `{` counted
/// as an opening, wherever it is.
fn flow_depth_bound(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> YamlError {
        document(text).expect_err(text)
    }

    #[test]
    fn depth_is_limited_where_it_is_exceeded() {
        let ok = format!(
            "a: {}{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(document(&ok).is_ok());
        // Level 65 (the mapping is level 1) opens at the 64th `[`.
        let at_65 = (1, 4 + MAX_DEPTH as u32 - 1);
        let e = err(&format!("a: {}", "[".repeat(MAX_DEPTH)));
        assert_eq!((e.line, e.column), at_65, "{e}");
        assert!(e.message.contains("nested deeper than 64 levels"), "{e}");
        // Far deeper: the event parser's own limit stops it first, reading ahead.
        let e = err(&format!("a: {}", "[".repeat(100_000)));
        assert_eq!((e.line, e.column), at_65, "{e}");
        let e = err(&"[".repeat(100_000));
        assert_eq!((e.line, e.column), (1, MAX_DEPTH as u32 + 1), "{e}");
        let e = err(&format!("a: {}", "[x, ".repeat(100_000)));
        assert_eq!(
            (e.line, e.column),
            (1, 4 + 4 * (MAX_DEPTH as u32 - 1)),
            "{e}"
        );
        assert!(e.message.contains("nested deeper than 64 levels"), "{e}");
    }

    #[test]
    fn positions_past_the_end_point_at_the_last_line() {
        let e = err("a:\n  b: [x");
        assert_eq!((e.line, e.column), (2, 8), "{e}");
        let e = err("a:\n  b: [x\n");
        assert_eq!((e.line, e.column), (3, 1), "{e}");
    }

    #[test]
    fn the_depth_bound_clears_real_configs_and_holds_deep_ones() {
        let config = "daemon:\n  socket: run/s.sock\nscripts:\n  backup:\n    command: [\"/bin/b\", \"-x\"]\n    env: { A: \"1\" }\n    health:\n      http:\n        url: http://x/\n";
        // Columns 0..=8 → 18, plus twice one bracket level.
        assert_eq!(depth_bound(config), 2 * 9 + 2);
        assert!(depth_bound(config) <= MAX_DEPTH);
        assert_eq!(depth_bound(""), 2);
        // `- - - x` nests on one line: each `-` is in the prefix.
        assert_eq!(depth_bound("- - - x\n"), 2 * 7);
        // Too deep by indentation or by brackets: the event scan decides.
        let deep: String = (0..40)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(depth_bound(&deep) > MAX_DEPTH);
        assert!(depth_bound(&format!("a: {}", "[".repeat(MAX_DEPTH))) > MAX_DEPTH);
    }

    /// Nested mappings and sequences (block style, as `serde_yaml` writes them), `depth`
    /// levels of collections.
    fn nested(depth: usize, seq: &[bool]) -> Value {
        let mut v = Value::String("x".into());
        for i in 0..depth {
            v = if seq[i % seq.len()] {
                Value::Sequence(vec![v])
            } else {
                let mut m = serde_yaml::Mapping::new();
                m.insert(Value::String(format!("k{i}")), v);
                Value::Mapping(m)
            };
        }
        v
    }

    proptest::proptest! {
        /// The bound is never below the real depth: a text it clears is never one the
        /// event scan would refuse as too deep.
        #[test]
        fn the_depth_bound_is_never_below_the_depth(depth in 1usize..80, seq in proptest::collection::vec(proptest::bool::ANY, 1..6)) {
            let text = serde_yaml::to_string(&nested(depth, &seq)).expect("serialises");
            proptest::prop_assert!(depth_bound(&text) >= depth, "{text}");
            let refused = Scan::of(&text).refusal.is_some();
            proptest::prop_assert_eq!(refused, depth > MAX_DEPTH, "{}", text);
            if depth_bound(&text) <= MAX_DEPTH {
                proptest::prop_assert!(document(&text).is_ok(), "{}", text);
            }
        }
    }

    #[test]
    fn the_depth_bound_counts_every_bracket() {
        assert_eq!(flow_depth_bound("a: [b, {c: d}]"), 2);
        assert_eq!(flow_depth_bound("]]] [ ["), 2);
        assert_eq!(flow_depth_bound(""), 0);
    }
}
