//! Reading the `include` globs of a main file cheaply, before the files they match can be
//! read and the whole config validated.

use super::parse::strip_bom;

/// The `include` globs of a main file, leniently: anything malformed yields nothing here
/// and is reported by validation.
///
/// Read on every reload before the included files can be, so it does not build the whole
/// document: a scan of the YAML events stops at the top-level `include` key (unknown
/// constructs fall back to a full parse, which gives the same answer).
pub fn include_patterns(main_text: &str) -> Vec<String> {
    // The daemon reads the files on every `ctl status` (to tell whether the disk matches
    // what runs), and the main file rarely changes: parse a given text once.
    static LAST: std::sync::Mutex<Option<(String, Vec<String>)>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((text, patterns)) = last.as_ref() {
        if text == main_text {
            return patterns.clone();
        }
    }
    let patterns = find_include_patterns(strip_bom(main_text));
    *last = Some((main_text.to_owned(), patterns.clone()));
    patterns
}

fn find_include_patterns(main_text: &str) -> Vec<String> {
    // The key can only be spelled without the word in a double-quoted key with escapes.
    if !main_text.contains("include") && !main_text.contains('\\') {
        return Vec::new();
    }
    scan_include(main_text).unwrap_or_else(|| parse_include(main_text))
}

/// [`include_patterns`] by building the whole document.
fn parse_include(main_text: &str) -> Vec<String> {
    let Ok(value) = super::parse::document(main_text) else {
        return Vec::new();
    };
    match value.get("include") {
        Some(serde_yaml::Value::String(s)) => vec![s.clone()],
        Some(serde_yaml::Value::Sequence(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// [`include_patterns`] from the event stream of a plain block or flow mapping, stopping at
/// the `include` key; `None` for anything it does not handle exactly like the full parse
/// (aliases, tags, complex keys, more than one document, syntax errors before the key). A
/// syntax error after the key is not seen: the globs are read, and validation reports it.
fn scan_include(main_text: &str) -> Option<Vec<String>> {
    use yaml_rust2::parser::{Event, Parser};
    use yaml_rust2::scanner::TScalarStyle;
    // A second document (which the full parse refuses) starts with a marker line; and
    // yaml-rust2 also takes a `---` after a key (`"include": ---`) for one, where the full
    // parse reads a string. Any marker after the first line's start: the full parse decides.
    let rest = main_text.get(3..).unwrap_or("");
    if rest.contains("---") || rest.contains("...") {
        return None;
    }
    // yaml-rust2 skips a byte-order mark anywhere; the full parse only at the start.
    if main_text.contains('\u{feff}') {
        return None;
    }
    let mut parser = Parser::new_from_str(main_text);
    let mut next = move || parser.next_token().ok().map(|(event, _)| event);
    // A scalar as the full parse types it (a plain `5`, `true` or `~` is no string); `None`
    // for a block scalar (`|`, `>`), whose final line breaks the two parsers keep
    // differently at the end of the text.
    let string = |text: String, style: TScalarStyle| match style {
        TScalarStyle::Literal | TScalarStyle::Folded => None,
        TScalarStyle::Plain => Some(
            matches!(
                serde_yaml::from_str::<serde_yaml::Value>(&text),
                Ok(serde_yaml::Value::String(_))
            )
            .then_some(text),
        ),
        _ => Some(Some(text)),
    };
    if !matches!(next()?, Event::StreamStart) || !matches!(next()?, Event::DocumentStart) {
        return None;
    }
    if !matches!(next()?, Event::MappingStart(0, None)) {
        return None;
    }
    loop {
        match next()? {
            Event::MappingEnd => break,
            Event::Scalar(key, _, 0, None) if key == "include" => {
                return match next()? {
                    Event::Scalar(text, style, 0, None) => {
                        Some(string(text, style)?.into_iter().collect())
                    }
                    Event::SequenceStart(0, None) => {
                        let mut out = Vec::new();
                        loop {
                            match next()? {
                                Event::SequenceEnd => break Some(out),
                                Event::Scalar(text, style, 0, None) => {
                                    out.extend(string(text, style)?)
                                }
                                _ => return None,
                            }
                        }
                    }
                    _ => None,
                };
            }
            Event::Scalar(_, _, 0, None) => skip_value(&mut next)?,
            _ => return None,
        }
    }
    // No `include` key: the full parse finds none either, if this was the only document.
    match (next()?, next()?) {
        (Event::DocumentEnd, Event::StreamEnd) => Some(Vec::new()),
        _ => None,
    }
}

/// Skips one value (scalar or whole collection) of the event stream; `None` on an alias, an
/// anchor or a tag, or at the end of the stream.
fn skip_value(next: &mut impl FnMut() -> Option<yaml_rust2::parser::Event>) -> Option<()> {
    use yaml_rust2::parser::Event;
    let mut depth = 0usize;
    loop {
        match next()? {
            Event::Scalar(_, _, 0, None) => {}
            Event::MappingStart(0, None) | Event::SequenceStart(0, None) => depth += 1,
            Event::MappingEnd | Event::SequenceEnd => depth = depth.checked_sub(1)?,
            _ => return None,
        }
        if depth == 0 {
            return Some(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_include_scan_agrees_with_the_full_parse() {
        let docs = [
            "include: [\"a/*.yaml\", 'b.yaml']\nscripts: {}\n",
            "include: \"conf.d/*.yaml\"\n",
            "include: conf.d/*.yaml\n",
            "scripts:\n  a:\n    command: [x, {y: z}]\n    env: { A: 1 }\ninclude:\n  - c.yaml\n  - 5\n  - \"6\"\n",
            "scripts:\n  a:\n    command: x\n",
            "include: 5\n",
            "include: true\n",
            "include: ~\n",
            "include:\n",
            "include: [a, [b]]\n",
            "include: {a: b}\n",
            "{include: [a.yaml], scripts: {}}\n",
            "base: &b [x.yaml]\ninclude: *b\n",
            "include: !!str x.yaml\n",
            "---\ninclude: [a.yaml]\n...\n",
            "include: [a.yaml]\n---\ninclude: [b.yaml]\n",
            "\"include\": ---\n",
            "include: |\n",
            "\"include\": \u{feff}",
            "include:\n  - >-\n    a.yaml\n  ",
            "include: [a/---.yaml]\n",
            "scripts: {}\n---\nscripts: {}\n",
            "",
            "# only a comment\n",
            "- a\n- b\n",
            "just a string\n",
            "scripts: [unterminated\ninclude: [a.yaml]\n",
            "? [complex, key]\n: value\ninclude: [a.yaml]\n",
            "\"incl\\u0075de\": [a.yaml]\n",
            "scripts: {}\n",
        ];
        for doc in docs {
            assert_eq!(include_patterns(doc), parse_include(doc), "{doc:?}");
        }
        // The scan itself (not the fallback) handles the usual shapes.
        assert_eq!(
            scan_include("include: [\"a/*.yaml\"]\nscripts: {}\n"),
            Some(vec!["a/*.yaml".to_owned()])
        );
        assert_eq!(
            scan_include("scripts:\n  a:\n    command: [x]\n"),
            Some(Vec::new())
        );
    }
}
