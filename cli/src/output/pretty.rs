//! The layout of every JSON document `ctl` prints: serde_json's pretty layout (two spaces a
//! level), byte for byte, written with fewer writes.
//!
//! serde_json's `PrettyFormatter` writes a line's break and then each level of its indent
//! separately: for `ctl -o json status` of 1,000 scripts that was ~100,000 tiny writes into
//! the buffer, a third of the command's instructions. [`Pretty`] writes the break and the
//! whole indent as one slice of `BREAKS`.

use serde_json::ser::Formatter;
use std::io;

/// `,` then a line break then the indent of [`DEEPEST`] levels: a separator, break and
/// indent are one slice of it.
const BREAKS: &[u8] = b",\n                                                                ";

/// The deepest level [`BREAKS`] holds; deeper ones are written a level at a time.
const DEEPEST: usize = (BREAKS.len() - 2) / 2;

/// serde_json's pretty layout (indent of two spaces), as [`Pretty::to_vec`] writes it.
#[derive(Debug, Default)]
pub struct Pretty {
    level: usize,
    has_value: bool,
}

impl Pretty {
    /// `value` as serde_json's `to_vec_pretty` writes it.
    pub fn to_vec<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(4096);
        let mut ser = serde_json::Serializer::with_formatter(&mut out, Pretty::default());
        value.serialize(&mut ser)?;
        Ok(out)
    }

    /// A line break (after a `,` when `comma`) and the indent of the current level.
    fn line<W: ?Sized + io::Write>(&self, w: &mut W, comma: bool) -> io::Result<()> {
        let from = usize::from(!comma);
        if self.level <= DEEPEST {
            return w.write_all(&BREAKS[from..2 + 2 * self.level]);
        }
        w.write_all(&BREAKS[from..2])?;
        for _ in 0..self.level {
            w.write_all(b"  ")?;
        }
        Ok(())
    }

    /// The end of an object or array: on its own line when it had a value.
    fn close<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.line(w, false)?;
        }
        w.write_all(bracket)
    }
}

impl Formatter for Pretty {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.line(w, !first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.line(w, !first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!({"leaf": [1, "two", null, {}, []]}), |inner, i| {
            json!({ "level": i, "inner": inner, "list": [inner.clone(), "x"], "empty": {} })
        })
    }

    #[test]
    fn the_layout_is_serde_jsons_pretty_one() {
        let docs = [
            json!(null),
            json!([]),
            json!({}),
            json!({"a": [], "b": {}, "c": [[]], "d": [{}], "e": "q\"uote\n"}),
            json!([1, [2, [3, [4]]], {"k": {"k": {"k": [true, false]}}}]),
            nested(3),
            // Deeper than BREAKS holds.
            nested(DEEPEST / 2 + 3),
        ];
        for doc in docs {
            let want = serde_json::to_vec_pretty(&doc).expect("serde_json");
            let got = Pretty::to_vec(&doc).expect("pretty");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
        }
    }

    fn values() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z\"\\\\\n é]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(8, 64, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn any_document_is_laid_out_as_serde_json_does(doc in values()) {
            proptest::prop_assert_eq!(
                Pretty::to_vec(&doc).expect("pretty"),
                serde_json::to_vec_pretty(&doc).expect("serde_json")
            );
        }
    }
}
