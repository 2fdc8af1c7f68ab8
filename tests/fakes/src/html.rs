//! Telegram's HTML parse mode, as the Bot API checks it: the tags it supports, balanced; `&lt;`, `&gt;`,
//! `&amp;`, `&quot;` and numeric entities; a `<` that starts no supported tag is an error. Gives the text a
//! phone shows (entities decoded, tags removed), whose length Telegram limits, or the error Telegram answers.

/// Tags Telegram's HTML mode accepts.
const TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "tg-emoji",
    "code",
    "pre",
    "blockquote",
];

/// The visible text of `html`, or Telegram's error description (`Bad Request: can't parse entities: ...`).
pub fn parse(html: &str) -> Result<String, String> {
    let fail = |what: String| Err(format!("Bad Request: can't parse entities: {what}"));
    let mut out = String::with_capacity(html.len());
    let mut stack: Vec<String> = Vec::new();
    let mut i = 0;
    while i < html.len() {
        let Some(c) = html[i..].chars().next() else { break };
        match c {
            '<' => {
                let Some(end) = html[i..].find('>') else {
                    return fail(format!("Unclosed start tag at byte offset {i}"));
                };
                let inner = &html[i + 1..i + end];
                if let Some(name) = inner.strip_prefix('/') {
                    let name = name.trim().to_ascii_lowercase();
                    match stack.pop() {
                        Some(open) if open == name => {}
                        Some(open) => {
                            return fail(format!(
                                "Can't find end tag corresponding to start tag \"{open}\" at byte offset {i}"
                            ));
                        }
                        None => return fail(format!("Unexpected end tag at byte offset {i}")),
                    }
                } else {
                    let name: String = inner
                        .split(|c: char| c.is_whitespace())
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        || !TAGS.contains(&name.as_str())
                    {
                        return fail(format!("Unsupported start tag \"{name}\" at byte offset {i}"));
                    }
                    stack.push(name);
                }
                i += end + 1;
            }
            '&' => {
                let rest = &html[i + 1..];
                let decoded = rest.find(';').filter(|&n| n <= 10).and_then(|n| {
                    let entity = &rest[..n];
                    let ch = match entity {
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "amp" => Some('&'),
                        "quot" => Some('"'),
                        e if e.starts_with("#x") || e.starts_with("#X") => {
                            u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32)
                        }
                        e if e.starts_with('#') => e[1..].parse::<u32>().ok().and_then(char::from_u32),
                        _ => None,
                    };
                    ch.map(|c| (c, n))
                });
                match decoded {
                    Some((c, n)) => {
                        out.push(c);
                        i += n + 2;
                    }
                    None => {
                        out.push('&');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    if let Some(open) = stack.pop() {
        return fail(format!("Can't find end tag corresponding to start tag \"{open}\""));
    }
    Ok(out)
}

/// Length as Telegram counts it: UTF-16 code units.
pub fn telegram_len(text: &str) -> usize {
    text.encode_utf16().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_telegram_accepts() {
        let check = |html: &str, expected: &str| assert_eq!(parse(html).as_deref(), Ok(expected), "{html}");
        check("<b>run</b>\n<pre>a &lt; b &amp;&amp; c &gt; d</pre>", "run\na < b && c > d");
        check("x &quot;y&quot; &#39;z&#39; &#x41;", "x \"y\" 'z' A");
        check("<a href=\"https://x\">link</a>", "link");
        check("a & b", "a & b");
        check("5 > 3", "5 > 3");
    }

    #[test]
    fn refuses_what_telegram_refuses() {
        let check = |html: &str| {
            let err = parse(html).expect_err(html);
            assert!(err.starts_with("Bad Request: can't parse entities: "), "{err}");
        };
        check("a < b");
        check("<script>x</script>");
        check("<b>unclosed");
        check("<b><i>x</b></i>");
        check("</b>");
        check("x <");
    }

    #[test]
    fn counts_utf16() {
        assert_eq!(telegram_len("é😀"), 3);
    }
}
