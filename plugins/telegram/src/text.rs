//! Fitting Telegram HTML into Telegram's limits: 4096 characters of visible text per message, 1024 per
//! caption, counted in UTF-16 code units after the markup is parsed.
//!
//! [`split`] cuts a long message into several at line boundaries (a traceback becomes two or three
//! messages), closing the tags open at the cut and opening them again in the next part, so every part is
//! valid HTML on its own; a line longer than a whole message is cut inside, never inside a tag or an entity.
//! [`cut`] keeps the start of a message that must stay one message (the live message is edited, not
//! added to) and ends it with a note of what was left out. Both only handle the markup Herald writes
//! (`render` escapes every user string), and neither sends anything.

/// Telegram's limit on a message's text.
pub const MESSAGE_LIMIT: usize = 4096;
/// Telegram's limit on a photo caption.
pub const CAPTION_LIMIT: usize = 1024;
/// A long message is sent as at most this many parts; the last one is cut with a note.
pub const MAX_PARTS: usize = 4;

#[derive(Debug, Clone, PartialEq)]
enum Token<'a> {
    /// `<b>` or `<pre>` (the whole tag text) with the tag name.
    Open(&'a str, String),
    /// `</b>`.
    Close(&'a str),
    /// One visible character (or entity), with its UTF-16 length.
    Text(&'a str, usize),
}

fn tokens(html: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        let Some(c) = rest.chars().next() else { break };
        let len = if c == '<'
            && let Some(end) = rest.find('>')
        {
            let tag = &rest[..=end];
            if tag.starts_with("</") {
                out.push(Token::Close(tag));
            } else {
                let name: String = tag[1..tag.len() - 1]
                    .split(|c: char| c.is_whitespace())
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                out.push(Token::Open(tag, name));
            }
            end + 1
        } else if c == '&'
            && let Some(end) = rest.find(';').filter(|&e| e <= 10 && e > 1)
            && rest[1..end].chars().all(|c| c.is_ascii_alphanumeric() || c == '#')
        {
            out.push(Token::Text(&rest[..=end], 1));
            end + 1
        } else {
            out.push(Token::Text(&rest[..c.len_utf8()], c.len_utf16()));
            c.len_utf8()
        };
        i += len;
    }
    out
}

/// Visible length of Telegram HTML, in UTF-16 code units.
pub fn visible_len(html: &str) -> usize {
    tokens(html)
        .iter()
        .map(|t| match t {
            Token::Text(_, n) => *n,
            _ => 0,
        })
        .sum()
}

/// One part being built: its text, visible length, and the tags open at its end.
struct Part<'a> {
    text: String,
    len: usize,
    open: Vec<(&'a str, String)>,
}

impl<'a> Part<'a> {
    fn start(open: &[(&'a str, String)]) -> Part<'a> {
        let mut text = String::new();
        for (tag, _) in open {
            text.push_str(tag);
        }
        Part { text, len: 0, open: open.to_vec() }
    }

    fn push(&mut self, token: &Token<'a>) {
        match token {
            Token::Open(tag, name) => {
                self.text.push_str(tag);
                self.open.push((tag, name.clone()));
            }
            Token::Close(tag) => {
                self.text.push_str(tag);
                self.open.pop();
            }
            Token::Text(t, n) => {
                self.text.push_str(t);
                self.len += n;
            }
        }
    }

    fn finish(mut self) -> (String, Vec<(&'a str, String)>) {
        for (_, name) in self.open.iter().rev() {
            self.text.push_str(&format!("</{name}>"));
        }
        (self.text, self.open)
    }
}

/// Split `html` into messages of at most `limit` visible characters each, at line boundaries where a line
/// fits, at most `max_parts` of them (the last cut with a note). Parts hold balanced tags; empty lines at a
/// cut are dropped.
pub fn split(html: &str, limit: usize, max_parts: usize) -> Vec<String> {
    if visible_len(html) <= limit {
        return vec![html.to_owned()];
    }
    let toks = tokens(html);
    let mut parts: Vec<String> = Vec::new();
    let mut open: Vec<(&str, String)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if parts.len() + 1 == max_parts.max(1) {
            // The last part allowed: keep what fits and say what is left out.
            let rest = rebuild(&open, &toks[i..]);
            parts.push(cut(&rest, limit));
            return parts;
        }
        // Take tokens while they fit; remember the last newline to cut there.
        let mut len = 0;
        let mut end = i;
        let mut last_newline = None;
        while end < toks.len() {
            if let Token::Text(t, n) = &toks[end] {
                if len + n > limit {
                    break;
                }
                len += n;
                if *t == "\n" {
                    last_newline = Some(end);
                }
            }
            end += 1;
        }
        let cut_at = if end >= toks.len() { end } else { last_newline.filter(|&n| n > i).unwrap_or(end) };
        // Always make progress, even when one character is wider than the limit.
        let cut_at = cut_at.max(i + 1);
        let mut part = Part::start(&open);
        for t in &toks[i..cut_at] {
            part.push(t);
        }
        let (text, still_open) = part.finish();
        parts.push(text);
        open = still_open;
        i = cut_at;
        // The newline at the cut is the break between the messages.
        while let Some(Token::Text("\n", _)) = toks.get(i) {
            i += 1;
        }
    }
    parts.retain(|p| visible_len(p) > 0);
    parts
}

fn rebuild(open: &[(&str, String)], toks: &[Token<'_>]) -> String {
    let mut part = Part::start(open);
    for t in toks {
        part.push(t);
    }
    part.finish().0
}

/// `html` cut to at most `limit` visible characters at a line boundary (inside the line when the first line
/// alone is too long), ending with `… (N more characters not shown)`; unchanged when it fits.
pub fn cut(html: &str, limit: usize) -> String {
    let total = visible_len(html);
    if total <= limit {
        return html.to_owned();
    }
    let toks = tokens(html);
    // Room for the note: "\n… (NNNNNN more characters not shown)".
    let budget = limit.saturating_sub(48);
    let mut len = 0;
    let mut end = 0;
    let mut last_newline = None;
    while end < toks.len() {
        if let Token::Text(t, n) = &toks[end] {
            if len + n > budget {
                break;
            }
            len += n;
            if *t == "\n" {
                last_newline = Some((end, len - 1));
            }
        }
        end += 1;
    }
    let (cut_at, kept) = match last_newline {
        Some((n, kept)) if kept > budget / 2 => (n, kept),
        _ => (end, len),
    };
    let mut part = Part::start(&[]);
    for t in &toks[..cut_at] {
        part.push(t);
    }
    let (mut text, _) = part.finish();
    text.push_str(&format!("\n… ({} more characters not shown)", total - kept));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_visible_utf16() {
        assert_eq!(visible_len("<b>ab</b>\n<pre>&lt;x&gt;</pre>"), 6);
        assert_eq!(visible_len("é😀 &amp;"), 5);
        assert_eq!(visible_len("a & b"), 5);
    }

    #[test]
    fn short_messages_are_left_alone() {
        assert_eq!(split("<b>x</b>", 10, 4), vec!["<b>x</b>"]);
        assert_eq!(cut("<b>x</b>", 10), "<b>x</b>");
    }

    #[test]
    fn splits_at_lines_and_keeps_tags_balanced() {
        let lines: Vec<String> = (0..30).map(|i| format!("line {i:02} &amp; more")).collect();
        let html = format!("<b>title</b>\n<pre>{}</pre>", lines.join("\n"));
        let parts = split(&html, 100, 10);
        assert!(parts.len() > 3, "{parts:?}");
        for p in &parts {
            assert!(visible_len(p) <= 100, "{p}");
            assert_eq!(p.matches("<pre>").count(), p.matches("</pre>").count(), "{p}");
            assert!(!p.starts_with('\n') && !p.ends_with("\n</pre>"), "{p:?}");
        }
        assert!(parts[0].starts_with("<b>title</b>\n<pre>line 00"), "{}", parts[0]);
        assert!(parts[1].starts_with("<pre>line"), "{}", parts[1]);
        // Nothing lost: the visible text of the parts, joined by newlines, is the original.
        let joined =
            parts.iter().map(|p| p.replace("<pre>", "").replace("</pre>", "")).collect::<Vec<_>>().join("\n");
        assert_eq!(joined, html.replace("<pre>", "").replace("</pre>", ""));
    }

    #[test]
    fn a_line_longer_than_a_message_is_cut_inside_not_in_an_entity() {
        let html = format!("<pre>{}</pre>", "&lt;".repeat(250));
        let parts = split(&html, 100, 10);
        assert_eq!(parts.len(), 3);
        for p in &parts {
            assert!(p.starts_with("<pre>&lt;") && p.ends_with("&lt;</pre>"), "{p}");
        }
    }

    #[test]
    fn too_many_parts_end_with_a_note() {
        let html = (0..100).map(|i| format!("row {i:03}")).collect::<Vec<_>>().join("\n");
        let parts = split(&html, 100, 3);
        assert_eq!(parts.len(), 3);
        assert!(parts[2].contains("more characters not shown)"), "{}", parts[2]);
        assert!(parts.iter().all(|p| visible_len(p) <= 100));
    }

    #[test]
    fn cut_keeps_the_start_and_says_how_much_is_missing() {
        let html = format!(
            "<b>t</b>\n<pre>{}</pre>",
            (0..50).map(|i| format!("row {i:03}")).collect::<Vec<_>>().join("\n")
        );
        let out = cut(&html, 200);
        assert!(visible_len(&out) <= 200, "{out}");
        assert!(out.starts_with("<b>t</b>\n<pre>row 000\n"), "{out}");
        assert!(out.contains("</pre>\n… (") && out.ends_with("more characters not shown)"), "{out}");
        let shown = visible_len(&out[..out.find("\n…").expect("note")]);
        let missing: usize = out
            .rsplit('(')
            .next()
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("number");
        assert_eq!(shown + missing, visible_len(&html));
    }
}
