//! Every example in docs/events.md decodes, and every event type has one.

use std::collections::BTreeSet;

use herald_event::{EventKind, decode_event, encode_event};

fn json_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim()) {
            (None, "```json") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```json block in docs/events.md");
    blocks
}

#[test]
fn every_example_in_the_events_doc_decodes_and_round_trips() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/events.md");
    let text = std::fs::read_to_string(path).expect("docs/events.md exists");
    let blocks = json_blocks(&text);
    assert!(blocks.len() >= EventKind::ALL.len(), "only {} examples", blocks.len());
    let mut seen = BTreeSet::new();
    for block in &blocks {
        let event = decode_event(block.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{block}"));
        seen.insert(event.kind());
        let again = decode_event(encode_event(&event).expect("examples encode").as_bytes())
            .expect("an encoded event decodes");
        // NaN != NaN, so compare the encodings.
        assert_eq!(encode_event(&again).ok(), encode_event(&event).ok(), "{block}");
    }
    let missing: Vec<_> = EventKind::ALL.iter().filter(|k| !seen.contains(k)).collect();
    assert!(missing.is_empty(), "docs/events.md has no example of {missing:?}");
}
