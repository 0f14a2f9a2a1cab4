use super::*;

fn parse_ok(text: &str) -> Stream {
    let s = parse(text, &Limits::default());
    assert!(s.errors.is_empty(), "unexpected errors: {:?}", s.errors);
    s
}

/// Text of every node, in creation order, for compact assertions.
fn node_texts<'a>(doc: &Document, text: &'a str) -> Vec<&'a str> {
    doc.nodes().map(|(_, n)| n.range.slice(text)).collect()
}

#[test]
fn scalar_ranges_are_exact() {
    let text = "a: 'it''s'   # c1\nb: \"x\\\"y\"  # c2\nc: |\n  line1\n  line2\n\n# comment\nd: plain\n  continued  \ne: >-\n  folded\n";
    let s = parse_ok(text);
    let doc = &s.documents[0];
    let root = doc.root().unwrap();
    let slice = |k: &str| doc.node(doc.get(root, k).unwrap()).range.slice(text);
    assert_eq!(slice("a"), "'it''s'");
    assert_eq!(slice("b"), "\"x\\\"y\"");
    assert_eq!(slice("c"), "|\n  line1\n  line2");
    assert_eq!(slice("d"), "plain\n  continued");
    assert_eq!(slice("e"), ">-\n  folded");
    let comments: Vec<&str> = s.comments.iter().map(|r| r.slice(text)).collect();
    assert_eq!(comments, ["# c1", "# c2", "# comment"]);
}

#[test]
fn block_collections_end_at_their_last_child() {
    let text = "spec:\n  containers:\n  - name: a\n    image: x  # trailing\n  # between\n  - name: b\n\n# after\nother: 1\n";
    let s = parse_ok(text);
    let doc = &s.documents[0];
    let root = doc.root().unwrap();
    let containers = doc.get_path(root, &["spec", "containers"]).unwrap();
    assert_eq!(
        doc.node(containers).range.slice(text),
        "- name: a\n    image: x  # trailing\n  # between\n  - name: b"
    );
    let first = doc.items(containers)[0];
    assert_eq!(doc.node(first).range.slice(text), "name: a\n    image: x");
    assert!(!doc.node(containers).is_flow());
    assert_eq!(doc.node(root).range.slice(text), text.trim_end());
}

#[test]
fn an_empty_item_ends_its_sequence_after_its_dash() {
    for text in [
        "a:\n  - x\n  -",
        "a:\n  - x\n  -  # none\nb: 1\n",
        "a:\n- x\n- &e\n",
    ] {
        let s = parse_ok(text);
        let doc = &s.documents[0];
        let seq = doc.get(doc.root().unwrap(), "a").unwrap();
        let slice = doc.node(seq).range.slice(text);
        assert!(
            slice.starts_with("- x") && slice.trim_end().ends_with(['-', 'e']),
            "{text:?}: {slice:?}"
        );
    }
}

#[test]
fn flow_collections_include_brackets() {
    let text = "a: [1, {k: v}, 3]  # c\nb: {x: [y]}\n";
    let s = parse_ok(text);
    let doc = &s.documents[0];
    let root = doc.root().unwrap();
    let a = doc.get(root, "a").unwrap();
    assert_eq!(doc.node(a).range.slice(text), "[1, {k: v}, 3]");
    assert!(doc.node(a).is_flow());
    let inner = doc.items(a)[1];
    assert_eq!(doc.node(inner).range.slice(text), "{k: v}");
    let b = doc.get(root, "b").unwrap();
    assert_eq!(doc.node(b).range.slice(text), "{x: [y]}");
    assert_eq!(s.comments.len(), 1);
}

#[test]
fn bom_crlf_and_no_final_newline() {
    let text = "\u{feff}a: 1\r\nb:\r\n  - \"é\"\r\n  - z";
    let s = parse_ok(text);
    let doc = &s.documents[0];
    assert_eq!(
        node_texts(doc, text),
        [
            "a: 1\r\nb:\r\n  - \"é\"\r\n  - z",
            "a",
            "1",
            "b",
            "- \"é\"\r\n  - z",
            "\"é\"",
            "z"
        ]
    );
}

#[test]
fn multi_document_streams_with_empty_and_comment_only_documents() {
    let text = "a: 1\n---\n---\n# only a comment\n---\nb: 2\n...\n";
    let s = parse_ok(text);
    let roots: Vec<Option<&str>> = s
        .documents
        .iter()
        .map(|d| d.root().map(|r| d.node(r).range.slice(text)))
        .collect();
    assert_eq!(roots, [Some("a: 1"), None, None, Some("b: 2")]);
    assert_eq!(s.documents[3].range.slice(text), "---\nb: 2\n...");
}

#[test]
fn anchors_aliases_and_merges_resolve_without_expanding() {
    let text = "base: &base\n  runAsNonRoot: true\n  runAsUser: 10\nother: &o {runAsUser: 20}\nctx:\n  <<: [*base, *o]\n  runAsUser: 30\nref: *base\n";
    let s = parse_ok(text);
    let doc = &s.documents[0];
    let root = doc.root().unwrap();
    let ctx = doc.get(root, "ctx").unwrap();
    assert_eq!(
        doc.str_value(doc.get(ctx, "runAsUser").unwrap()),
        Some("30")
    );
    let inherited = doc.entry(ctx, "runAsNonRoot").unwrap();
    // The entry found through the merge is the one written under the anchor.
    assert_eq!(
        doc.node(inherited.key).range.start(),
        text.find("runAsNonRoot").unwrap()
    );
    let r = doc.get(root, "ref").unwrap();
    assert_eq!(doc.str_value(doc.get(r, "runAsUser").unwrap()), Some("10"));
    let base = doc.get(root, "base").unwrap();
    assert_eq!(doc.node(base).anchor.unwrap().slice(text), "&base");
    let keys: Vec<&str> = doc
        .entries(ctx)
        .iter()
        .map(|e| doc.key_str(e.key).unwrap())
        .collect();
    assert_eq!(keys, ["runAsNonRoot", "runAsUser"]);
}

#[test]
fn duplicate_keys_keep_the_last_value_and_are_recorded() {
    let text = "a: 1\nb: 2\na: 3\n";
    let s = parse_ok(text);
    let doc = &s.documents[0];
    let root = doc.root().unwrap();
    assert_eq!(doc.str_value(doc.get(root, "a").unwrap()), Some("3"));
    assert_eq!(doc.duplicate_keys.len(), 1);
    let dup = doc.duplicate_keys[0];
    assert_eq!(doc.node(dup.first).range.start(), 0);
    assert_eq!(doc.node(dup.again).range.start(), 10);
}

#[test]
fn tabs_are_a_syntax_error_and_later_documents_still_parse() {
    let text = "a: 1\n---\nb:\n\tc: 1\n---\nd: 2\n";
    let s = parse(text, &Limits::default());
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].kind, YamlErrorKind::Syntax);
    assert_eq!(
        &text[s.errors[0].range.start()..s.errors[0].range.start() + 1],
        "\t"
    );
    let line = text[..s.errors[0].range.start()].matches('\n').count() + 1;
    assert_eq!(line, 4);
    let roots: Vec<&str> = s
        .documents
        .iter()
        .filter_map(|d| d.root().map(|r| d.node(r).range.slice(text)))
        .collect();
    assert_eq!(roots, ["a: 1", "d: 2"]);
}

#[test]
fn a_deep_dash_bomb_is_a_limit_error_not_a_stack_overflow() {
    let text = "- ".repeat(200_000) + "x\n";
    let s = parse(&text, &Limits::default());
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].kind, YamlErrorKind::TooDeep);
    assert!(s.documents.is_empty());
}

#[test]
fn deep_flow_nesting_is_an_error() {
    let text = "[".repeat(300) + &"]".repeat(300);
    let s = parse(&text, &Limits::default());
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].kind, YamlErrorKind::TooDeep);
}

fn laughs(levels: u8) -> String {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..levels {
        let name = (b'a' + i) as char;
        let prev = (b'a' + i - 1) as char;
        text += &format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        );
    }
    text
}

#[test]
fn billion_laughs_is_refused_before_anyone_walks_it() {
    let text = laughs(9);
    let s = parse(&text, &Limits::default());
    assert!(s.documents.is_empty());
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].kind, YamlErrorKind::AliasBudget);
    assert_eq!(s.errors[0].range.start(), text.find('*').unwrap());
}

#[test]
fn walking_through_aliases_is_bounded_by_the_budget() {
    // 9^6 nodes expanded: under the expansion limit, over the walk budget.
    let text = laughs(6);
    let s = parse_ok(&text);
    let doc = &s.documents[0];
    let root = doc.root().unwrap();
    let f = doc.get(root, "f").unwrap();
    let walked: Result<serde_json::Value, _> = de::from_node(doc, f);
    let err = walked.unwrap_err();
    assert!(err.message.contains("alias expansion budget"), "{err:?}");
    assert!(doc.budget_exhausted());
}

#[test]
fn an_alias_inside_its_own_anchor_is_refused() {
    let s = parse("a: &a [1, *a]\nb: 2\n", &Limits::default());
    assert_eq!(s.errors.len(), 1);
    assert!(s.documents.is_empty());
}

#[test]
fn files_over_the_size_limit_are_not_parsed() {
    let limits = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    let s = parse("a: 123456789\n", &limits);
    assert_eq!(s.errors[0].kind, YamlErrorKind::TooLarge);
    assert!(s.documents.is_empty());
}

#[test]
fn deserialize_reports_the_failing_node() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Ctx {
        #[serde(rename = "runAsNonRoot")]
        run_as_non_root: Option<bool>,
    }
    let text = "runAsNonRoot: \"true\"\n";
    let s = parse_ok(text);
    let doc = &s.documents[0];
    let err = de::from_node::<Ctx>(doc, doc.root().unwrap()).unwrap_err();
    assert_eq!(err.range.unwrap().slice(text), "\"true\"");
    assert_eq!(err.message, "expected a boolean, found string \"true\"");
    let s = parse_ok("runAsNonRoot: yes\n");
    let ok = de::from_node::<Ctx>(&s.documents[0], s.documents[0].root().unwrap()).unwrap();
    assert_eq!(ok.run_as_non_root, Some(true));
}

#[test]
fn empty_values_and_properties() {
    let text = "a:\nb: !!str &x 5\nc: &y\n  - 1\n";
    let s = parse_ok(text);
    let doc = &s.documents[0];
    let root = doc.root().unwrap();
    let a = doc.get(root, "a").unwrap();
    assert!(doc.is_null(a));
    assert!(doc.node(a).range.is_empty());
    let b = doc.get(root, "b").unwrap();
    assert_eq!(doc.node(b).range.slice(text), "5");
    assert_eq!(doc.node(b).anchor.unwrap().slice(text), "&x");
    let c = doc.get(root, "c").unwrap();
    assert_eq!(doc.node(c).range.slice(text), "- 1");
    assert_eq!(doc.node(c).anchor.unwrap().slice(text), "&y");
}
