//! Doc heads: every `.rs` file of the workspace's crates starts with a `//!` paragraph that says what it is,
//! who uses it, and what it deliberately does not do. This checks that the paragraph is there and says
//! something, not what it says.

/// The folders whose `.rs` files are checked (build outputs and `.venv` are skipped while walking).
pub const CHECKED_DIRS: &[&str] = &["crates", "plugins", "examples", "tests", "xtask"];

/// Why the file at `path` (relative to the root) fails, if it does: its first line that is not blank must be a
/// `//!` line, and the `//!` block it opens must hold some text.
pub fn doc_head_problem(path: &str, text: &str) -> Option<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty()).peekable();
    let fix =
        "start it with a `//!` paragraph: what the file is, who uses it, what it deliberately does not do";
    match lines.peek() {
        Some(first) if first.trim_start().starts_with("//!") => {
            let says_something = lines
                .take_while(|l| l.trim_start().starts_with("//!"))
                .any(|l| !l.trim_start().trim_start_matches("//!").trim().is_empty());
            (!says_something).then(|| format!("{path}: the `//!` head is empty; {fix}"))
        }
        Some(first) => {
            Some(format!("{path}: the file begins with `{}`, not a `//!` head; {fix}", first.trim()))
        }
        None => Some(format!("{path}: the file is empty; {fix}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check() {
        let fix = "start it with a `//!` paragraph: what the file is, who uses it, what it deliberately does not do";
        for (text, expected) in [
            ("//! The outbox.\n\nuse std::fs;\n", None),
            ("\n//! After a blank line.\n", None),
            ("//!\n//! Text on the second line.\n", None),
            (
                "/// An item doc.\nfn f() {}\n",
                Some("the file begins with `/// An item doc.`, not a `//!` head"),
            ),
            ("use std::fs;\n//! Too late.\n", Some("the file begins with `use std::fs;`, not a `//!` head")),
            ("//!\n//!   \nfn f() {}\n", Some("the `//!` head is empty")),
            ("", Some("the file is empty")),
        ] {
            let expected = expected.map(|e| format!("crates/x/src/a.rs: {e}; {fix}"));
            assert_eq!(doc_head_problem("crates/x/src/a.rs", text), expected, "{text:?}");
        }
    }
}
