//! A config file's text cut into pieces that each parse alone to what they are in the
//! whole file: the *head* (everything up to the block `scripts:` line), one *chunk* per
//! script (its key line and every line below it), and the *tail* (the top-level keys after
//! the scripts). A save that changes one script then re-reads one chunk, not the file
//! (issue 16: the YAML parse was most of a save's cost with 10,000 scripts).
//!
//! The cut is made on lines only, so it must not change what any piece means:
//! - every piece is a contiguous run of lines, and each must parse alone (the caller falls
//!   back to the whole file otherwise). A construct crossing a cut (a quoted scalar or a
//!   flow collection over several lines) leaves the piece before the cut unterminated, which
//!   fails; an alias resolves to the last anchor of its name before it, which lies in its own
//!   piece when that piece parses (an anchor in another piece leaves it undefined: it fails);
//! - the `scripts:` line stands at column 0 with nothing but a comment after the colon, and
//!   every chunk starts at one column `n > 0` with a plain script name and a colon: a block
//!   mapping's key line, at the indentation of the scripts' mapping. Every other line of a
//!   chunk is blank, a comment, or deeper than `n` (its body, whose block scalars and plain
//!   continuation lines cannot reach column `n`); a line between column 0 and `n` is refused;
//! - the tail starts at the first line at column 0 after the scripts and holds no document
//!   marker or directive (`---`, `...`, `%`): alone it would be one document where the
//!   whole file is two.
//!
//! What this does not decide is left to the parse of each piece and to the caller: that the
//! head and the tail are mappings, that their keys and the scripts' names do not repeat, and
//! that a chunk is one mapping entry.

/// The pieces of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pieces<'t> {
    /// From the start through the `scripts:` line and the blank and comment lines after it.
    pub head: &'t str,
    /// One per script, in order.
    pub chunks: Vec<Chunk<'t>>,
    /// From the first line at column 0 after the scripts to the end (may be empty).
    pub tail: &'t str,
}

/// One script's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk<'t> {
    /// The name as written on its key line.
    pub key: &'t str,
    /// Its key line and every line up to the next chunk or the tail.
    pub text: &'t str,
}

/// What a line is, for the cut.
#[derive(Debug, PartialEq, Eq)]
enum Line<'t> {
    /// Only spaces, tabs and the line break, or a comment: it belongs to the piece it is in.
    Filler,
    /// Its first character that is not a space, at this column.
    Content(usize, &'t str),
}

fn classify(line: &str) -> Line<'_> {
    let column = line.bytes().take_while(|&b| b == b' ').count();
    let rest = &line[column..];
    let trimmed = rest.trim_end_matches(['\n', '\r', ' ', '\t']);
    if trimmed.is_empty() || trimmed.starts_with('#') {
        Line::Filler
    } else {
        Line::Content(column, rest)
    }
}

/// `scripts:`, then nothing or a comment.
fn is_scripts_line(rest: &str) -> bool {
    rest.strip_prefix("scripts:")
        .is_some_and(|after| after_colon_ok(after) && !has_value(after))
}

/// After a key's colon: the end of the line, or a space (the value or a comment follows).
fn after_colon_ok(after: &str) -> bool {
    after.is_empty() || after.starts_with([' ', '\n', '\r'])
}

/// Whether anything but a comment follows the colon.
fn has_value(after: &str) -> bool {
    let v = after.trim_matches([' ', '\t', '\n', '\r']);
    !(v.is_empty() || v.starts_with('#'))
}

/// The plain script name a chunk's key line starts with (`name:`), if it is one: a letter
/// or digit, then letters, digits, `_`, `-` and `.`, then a colon and a space or the end.
fn chunk_key(rest: &str) -> Option<&str> {
    let bytes = rest.as_bytes();
    if !bytes.first()?.is_ascii_alphanumeric() {
        return None;
    }
    let len = bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        .count();
    let after = rest[len..].strip_prefix(':')?;
    after_colon_ok(after).then(|| &rest[..len])
}

/// A document marker or a directive, which the tail must not hold.
fn is_marker(line: &str) -> bool {
    line.starts_with('%')
        || ["---", "..."].iter().any(|m| {
            line.strip_prefix(m)
                .is_some_and(|after| after.is_empty() || after.starts_with([' ', '\t', '\n', '\r']))
        })
}

/// Cuts `text` (without a byte-order mark) into pieces, or `None` when it has no block
/// `scripts:` section this can cut safely (the caller then parses the whole file).
pub(crate) fn split(text: &str) -> Option<Pieces<'_>> {
    let mut at = 0;
    let mut lines = text.split_inclusive('\n');
    // The head: through the `scripts:` line at column 0.
    loop {
        let line = lines.next()?;
        at += line.len();
        if let Line::Content(0, rest) = classify(line) {
            if is_scripts_line(rest) {
                break;
            }
        }
    }
    let mut head_end = at;
    let mut chunks: Vec<Chunk<'_>> = Vec::new();
    let mut column = None;
    let mut chunk_start = None;
    let mut tail_start = text.len();
    for line in lines {
        let start = at;
        at += line.len();
        let Line::Content(c, rest) = classify(line) else {
            if chunk_start.is_none() {
                head_end = at;
            }
            continue;
        };
        // A tab where indentation would be: YAML forbids it, but which column a parser
        // would take it for is not worth guessing, except deep inside a script's body.
        let inside = chunk_start.is_some() && column.is_some_and(|n| c > n);
        if rest.starts_with('\t') && !inside {
            return None;
        }
        if c == 0 {
            tail_start = start;
            break;
        }
        let n = *column.get_or_insert(c);
        if c > n {
            chunk_start?;
            continue;
        }
        if c < n {
            return None;
        }
        let key = chunk_key(rest)?;
        if let (Some(s), Some(last)) = (chunk_start, chunks.last_mut()) {
            last.text = &text[s..start];
        }
        chunk_start = Some(start);
        chunks.push(Chunk { key, text: "" });
    }
    if let (Some(s), Some(last)) = (chunk_start, chunks.last_mut()) {
        last.text = &text[s..tail_start];
    }
    let tail = &text[tail_start..];
    if tail.split_inclusive('\n').any(is_marker) {
        return None;
    }
    Some(Pieces {
        head: &text[..head_end],
        chunks,
        tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'t>(p: &Pieces<'t>) -> Vec<&'t str> {
        p.chunks.iter().map(|c| c.key).collect()
    }

    #[test]
    fn a_config_is_cut_at_its_scripts() {
        let text = "daemon:\n  socket: s\nscripts:\n  # first\n  a:\n    command: x\n\n  b.c-d_1: {command: y}\n# between\n  e:\n    command: |\n      echo\n\n      more\nreload:\n  verify: 1s\n";
        let p = split(text).expect("cuts");
        assert_eq!(p.head, "daemon:\n  socket: s\nscripts:\n  # first\n");
        assert_eq!(keys(&p), ["a", "b.c-d_1", "e"]);
        assert_eq!(p.chunks[0].text, "  a:\n    command: x\n\n");
        assert_eq!(p.chunks[1].text, "  b.c-d_1: {command: y}\n# between\n");
        assert_eq!(
            p.chunks[2].text,
            "  e:\n    command: |\n      echo\n\n      more\n"
        );
        assert_eq!(p.tail, "reload:\n  verify: 1s\n");
        let whole: String = [p.head]
            .into_iter()
            .chain(p.chunks.iter().map(|c| c.text))
            .chain([p.tail])
            .collect();
        assert_eq!(whole, text, "the pieces are the text");
    }

    #[test]
    fn what_cannot_be_cut_safely_is_not() {
        let refused = [
            // No block scripts section.
            "daemon: {}\n",
            "scripts: {a: {command: x}}\n",
            "scripts: # c\n  a: {command: x}\n  - b\n",
            // A line between column 0 and the scripts' column.
            "scripts:\n    a:\n      command: x\n  b:\n",
            // A key that is not a plain name, at the scripts' column.
            "scripts:\n  \"a\":\n    command: x\n",
            "scripts:\n  a :\n    command: x\n",
            "scripts:\n  a:\n    command: x\n  ? b\n",
            "scripts:\n  a:x\n",
            // A tab where the indentation would be.
            "scripts:\n\ta:\n",
            // Deeper lines that are not a script's key.
            "scripts:\n    x\n  a:\n",
            // Markers and directives in the tail.
            "scripts:\n  a:\n    command: x\n---\nreload: {}\n",
            "scripts:\n  a:\n    command: x\n...\n",
            "scripts:\n  a:\n    command: x\n%YAML 1.2\n",
        ];
        for text in refused {
            assert_eq!(split(text), None, "{text:?}");
        }
    }

    #[test]
    fn an_empty_scripts_section_and_line_ends() {
        let p = split("scripts:\nreload: {}\n").expect("cuts");
        assert!(p.chunks.is_empty());
        assert_eq!((p.head, p.tail), ("scripts:\n", "reload: {}\n"));
        let p = split("scripts:\r\n  a:\r\n    command: x\r\n  b: {}").expect("cuts");
        assert_eq!(keys(&p), ["a", "b"]);
        assert_eq!(p.chunks[1].text, "  b: {}");
        assert_eq!(p.tail, "");
    }
}
