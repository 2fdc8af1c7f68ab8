//! What a notification looks like in Slack: Block Kit sections in mrkdwn, every user-supplied string
//! escaped, each monospace section (table, traceback) in a code block cut to its latest lines within
//! Slack's limit, and the plain fallback text for phones and screen readers. No I/O.

use herald_plugin::Notification;
use serde_json::{Value, json};

/// Slack's limit on a section block's text.
const SECTION_LIMIT: usize = 3000;

/// Escape text for Slack mrkdwn: `&`, `<` and `>` (so nothing becomes a link or a mention).
pub fn escape_mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The notification text for phones and screen readers: the title and the first line.
pub(crate) fn fallback(n: &Notification) -> String {
    let first = n.text.lines().next().unwrap_or_default();
    escape_mrkdwn(&format!("{}: {first}", n.title))
}

/// `text` cut to its last lines within `limit` characters, saying how many were left out.
fn tail_within(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    let header = lines.first().copied().unwrap_or_default();
    let mut kept: Vec<&str> = Vec::new();
    let mut len = header.chars().count() + 40;
    for line in lines.iter().skip(1).rev() {
        len += line.chars().count() + 1;
        if len > limit {
            break;
        }
        kept.push(line);
    }
    kept.reverse();
    let skipped = lines.len().saturating_sub(1 + kept.len());
    let mut out = vec![header.to_owned(), format!("({skipped} earlier lines not shown)")];
    out.extend(kept.iter().map(|l| (*l).to_owned()));
    let out = out.join("\n");
    out.chars().take(limit).collect()
}

/// Block Kit: the title, the summary, and each monospace section (table, traceback) in a code block.
pub fn blocks(n: &Notification) -> Value {
    let mut sections = n.text.split("\n\n");
    let prose = sections.next().unwrap_or_default();
    let mut out = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": tail_within(&format!("*{}*\n{}", escape_mrkdwn(&n.title), escape_mrkdwn(prose)), SECTION_LIMIT) }
    })];
    for section in sections {
        let (label, body) = match section.split_once(":\n") {
            Some((label, body)) if !label.contains('\n') && !label.starts_with("epoch ") => {
                (Some(label), body)
            }
            _ => (None, section),
        };
        let code = tail_within(&escape_mrkdwn(body).replace("```", "'''"), SECTION_LIMIT - 40);
        let text = match label {
            Some(l) => format!("*{}*\n```{code}```", escape_mrkdwn(l)),
            None => format!("```{code}```"),
        };
        out.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } }));
        if out.len() >= 45 {
            break;
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_mrkdwn() {
        assert_eq!(escape_mrkdwn("<!channel> & <@U1>"), "&lt;!channel&gt; &amp; &lt;@U1&gt;");
    }

    #[test]
    fn long_code_keeps_its_header_and_latest_lines() {
        let text = std::iter::once("epoch     train_loss".to_owned())
            .chain((0..500).map(|i| format!("{i:<8}  0.1")))
            .collect::<Vec<_>>()
            .join("\n");
        let out = tail_within(&text, 1000);
        assert!(out.chars().count() <= 1000);
        assert!(out.starts_with("epoch     train_loss\n("), "{out}");
        assert!(out.ends_with("499       0.1"), "{out}");
    }
}
