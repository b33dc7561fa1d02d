//! Line and column of every key and value of a YAML document, by key path.
//!
//! serde_yaml's values carry no positions, so the text is read a second time with
//! yaml-rust2's event parser, whose events carry markers.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// Where the keys and values of one document are.
#[derive(Debug, Default)]
pub struct Positions {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
}

impl Positions {
    /// Indexes `text`; a document that does not parse yields an empty index.
    pub fn of(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(super::parse::strip_bom(text));
        // A scan error is reported by serde_yaml; what was indexed before it stays usable.
        let _ = parser.load(&mut builder, false);
        builder.positions
    }

    /// Position of the key at `path` (for unknown-key errors), else of its value.
    pub fn key(&self, path: &str) -> Pos {
        self.keys
            .get(path)
            .or_else(|| self.values.get(path))
            .copied()
            .unwrap_or_else(|| self.parent(path))
    }

    /// Position of the value at `path`, else of its key, else of the closest ancestor.
    pub fn value(&self, path: &str) -> Pos {
        self.values
            .get(path)
            .or_else(|| self.keys.get(path))
            .copied()
            .unwrap_or_else(|| self.parent(path))
    }

    fn parent(&self, path: &str) -> Pos {
        match path.rfind(['.', '[']) {
            Some(i) => self.key(&path[..i]),
            None => Pos { line: 1, column: 1 },
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: Positions,
    /// Path of the mapping started by the previous event, if any.
    new_map: Option<String>,
}

fn pos(mark: Marker) -> Pos {
    Pos {
        line: mark.line() as u32,
        column: mark.col() as u32 + 1,
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// Path of a node starting now, and whether it is a mapping key (only scalars are).
    fn node_path(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.positions.values.insert(p.clone(), pos(mark));
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => {
                    let p = join(path, &k);
                    self.positions.values.insert(p.clone(), pos(mark));
                    Some(p)
                }
                None => {
                    let k = scalar.unwrap_or("?").to_owned();
                    let p = join(path, &k);
                    self.positions.keys.insert(p, pos(mark));
                    *key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let new_map = self.new_map.take();
        match ev {
            Event::Scalar(text, style, ..) => {
                // A block mapping is marked at its first `:`; move it to its first key.
                if let Some(v) = new_map.and_then(|m| self.positions.values.get_mut(&m)) {
                    let k = pos(mark);
                    if (k.line, k.column) < (v.line, v.column) {
                        *v = k;
                    }
                }
                let path = self.node_path(Some(&text), mark);
                // An implicit null (`key:` with nothing after it) is marked where the next
                // token starts, often another key or past the end: point at its key instead.
                if let Some(p) = path.filter(|_| text.is_empty() && style == TScalarStyle::Plain) {
                    self.positions.values.remove(&p);
                }
            }
            Event::Alias(_) => {
                self.node_path(Some("*alias"), mark);
            }
            Event::MappingStart(..) => {
                let path = self.node_path(None, mark).unwrap_or_default();
                self.new_map = Some(path.clone());
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(None, mark).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_values() {
        let text = "scripts:\n  backup:\n    interval: 5 mins\n    command: [a, b]\n";
        let p = Positions::of(text);
        assert_eq!(p.key("scripts.backup.interval"), Pos { line: 3, column: 5 });
        assert_eq!(
            p.value("scripts.backup.interval"),
            Pos {
                line: 3,
                column: 15
            }
        );
        assert_eq!(
            p.value("scripts.backup.command[1]"),
            Pos {
                line: 4,
                column: 18
            }
        );
        // Missing paths fall back to the closest ancestor.
        assert_eq!(
            p.value("scripts.backup.timeout"),
            Pos { line: 2, column: 3 }
        );
    }
}
