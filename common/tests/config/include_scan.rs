//! The include scanner (`include_patterns`, which reads the `include` key without building
//! the whole document) against the YAML parser: on any text the parser accepts, it must find
//! exactly the globs the full parse finds (`include:` a string, or a list of which the strings
//! count).
//!
//! On a text the parser refuses the two may differ, by design: the scan stops at the
//! `include` value, so a syntax error or a duplicate key after it is not seen and the globs
//! are still read (validation reports the error, the watcher keeps watching the include
//! directories, and a rollback finds the files to remove "even when the rest of it does not
//! parse").

use proptest::prelude::*;
use scriptd_common::config::include_patterns;

/// What the full parse says the `include` globs are; `None` when it refuses the text.
fn parsed(text: &str) -> Option<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let v = serde_yaml::from_str::<serde_yaml::Value>(text).ok()?;
    Some(match v.get("include") {
        Some(serde_yaml::Value::String(s)) => vec![s.clone()],
        Some(serde_yaml::Value::Sequence(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    })
}

/// The scanner agrees with the parser on `text`, if the parser accepts it.
fn agrees(text: &str) -> Result<(), TestCaseError> {
    if let Some(want) = parsed(text) {
        prop_assert_eq!(include_patterns(text), want, "{:?}", text);
    }
    Ok(())
}

/// Pieces of config text: keys (the `include` key spelled several ways), values of every
/// kind, anchors, aliases, tags, document markers, comments and stray syntax.
fn piece() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "include: ",
        "include:",
        "\"include\": ",
        "'include': ",
        "\"incl\\u0075de\": ",
        "? include\n: ",
        "scripts: ",
        "defaults: ",
        "daemon: ",
        "a: ",
        "- ",
        "  ",
        "    ",
        "\n",
        "\n  - ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "\"a/*.yaml\"",
        "'b.yaml'",
        "c.yaml",
        "5",
        "true",
        "~",
        "null",
        "&x ",
        "*x",
        "!!str ",
        "!custom ",
        "---\n",
        "...\n",
        "# comment\n",
        "|\n  block\n",
        ">-\n  folded\n",
        "\"unterminated",
        "\t",
        ": ",
        "\u{feff}",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        4 => fixed,
        1 => "[a-z./*]{1,8}",
    ]
}

/// Texts that look like configs: a few top-level entries, each a key and a value.
fn config_like() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("[\"a/*.yaml\", 'b.yaml', c.yaml]".to_owned()),
        Just("\n  - x.yaml\n  - 5\n  - \"y.yaml\"".to_owned()),
        Just("conf.d/*.yaml".to_owned()),
        Just("{k: v}".to_owned()),
        Just("\n  a:\n    command: [x, {y: z}]".to_owned()),
        Just("&anchor [a.yaml]".to_owned()),
        Just("*anchor".to_owned()),
        Just("".to_owned()),
        "[a-z ,\\[\\]{}:'\"]{0,12}",
    ];
    let key = prop::sample::select(vec!["include", "scripts", "defaults", "x", "\"include\""]);
    prop::collection::vec((key, value), 0..5).prop_map(|entries| {
        entries
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn agrees_with_the_parser_on_config_like_text(text in config_like()) {
        agrees(&text)?;
    }

    #[test]
    fn agrees_with_the_parser_on_yaml_pieces(
        pieces in prop::collection::vec(piece(), 0..16)
    ) {
        let text: String = pieces.concat();
        agrees(&text)?;
    }

    #[test]
    fn agrees_with_the_parser_on_any_text(text in "(include: )?[ -~\n\t]{0,48}") {
        agrees(&text)?;
    }
}
