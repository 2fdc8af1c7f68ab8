//! A small shell-style glob for run names (`sweep-*`, `lr-?e-3`, `fold[0-4]`): the `runs` key of a rule.
//!
//! `*` matches any run of characters, `?` one character, `[abc]`, `[a-z]` and `[!abc]` one character of (or
//! not of) a set, and `\` makes the next character literal. There are no path separators: a run name is one
//! string. Matching is linear in the name times the number of `*`s, with no recursion, so a hostile pattern
//! cannot blow the stack. This module imports nothing else of the crate.

use std::fmt;

/// A parsed glob pattern.
#[derive(Clone, PartialEq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Char(char),
    Any,
    Star,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Glob {
    /// Parse `pattern`; the error says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => {
                    // `**` is the same as `*`.
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                '?' => Token::Any,
                '\\' => match chars.next() {
                    Some(next) => Token::Char(next),
                    None => {
                        return Err(format!(
                            "`{pattern}` ends with a lone `\\`; write `\\\\` for a backslash"
                        ));
                    }
                },
                '[' => {
                    let negated = chars.next_if(|&c| c == '!' || c == '^').is_some();
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    // A `]` first in the set is a literal.
                    let mut first = true;
                    while let Some(c) = chars.next() {
                        if c == ']' && !first {
                            closed = true;
                            break;
                        }
                        first = false;
                        let lo = if c == '\\' { chars.next().unwrap_or('\\') } else { c };
                        let mut ahead = chars.clone();
                        let hi = match (ahead.next(), ahead.next()) {
                            // `a-z` is a range; a `-` last in the set is a literal, read next time round.
                            (Some('-'), Some(h)) if h != ']' => {
                                chars.next();
                                chars.next();
                                if h == '\\' { chars.next().unwrap_or('\\') } else { h }
                            }
                            _ => lo,
                        };
                        if hi < lo {
                            return Err(format!("`{pattern}` has the range `{lo}-{hi}`, which is backwards"));
                        }
                        ranges.push((lo, hi));
                    }
                    if !closed {
                        return Err(format!("`{pattern}` has a `[` without its `]`"));
                    }
                    Token::Class { negated, ranges }
                }
                other => Token::Char(other),
            };
            tokens.push(token);
        }
        Ok(Glob { pattern: pattern.to_owned(), tokens })
    }

    /// The glob that matches every name.
    pub fn any() -> Glob {
        Glob { pattern: "*".to_owned(), tokens: vec![Token::Star] }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the glob matches every name.
    pub fn is_any(&self) -> bool {
        self.tokens == [Token::Star]
    }

    /// Whether `name` matches, as a whole.
    pub fn matches(&self, name: &str) -> bool {
        if self.is_any() {
            return true;
        }
        let name: Vec<char> = name.chars().collect();
        let (mut t, mut n) = (0, 0);
        // Where to resume after the latest `*`: the token after it and the name position it now covers up to.
        let mut resume: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(t) {
                Some(Token::Star) => {
                    resume = Some((t + 1, n));
                    t += 1;
                    continue;
                }
                Some(token) if token.matches(name[n]) => {
                    t += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            match resume {
                // Let the `*` take one more character and try again from there.
                Some((after, covered)) => {
                    resume = Some((after, covered + 1));
                    t = after;
                    n = covered + 1;
                }
                None => return false,
            }
        }
        self.tokens[t..].iter().all(|token| *token == Token::Star)
    }
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Char(x) => *x == c,
            Token::Any => true,
            Token::Star => false,
            Token::Class { negated, ranges } => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated,
        }
    }
}

impl Default for Glob {
    fn default() -> Glob {
        Glob::any()
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, yes: &[&str], no: &[&str]) {
        let glob = Glob::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        for name in yes {
            assert!(glob.matches(name), "{pattern} should match {name}");
        }
        for name in no {
            assert!(!glob.matches(name), "{pattern} should not match {name}");
        }
    }

    #[test]
    fn patterns_match_whole_names() {
        check("*", &["", "anything"], &[]);
        check("sweep-*", &["sweep-", "sweep-lr-3"], &["sweep", "my-sweep-1", "Sweep-1"]);
        check("*-final", &["a-final", "-final"], &["a-final-2"]);
        check("a*b*c", &["abc", "aXbYc", "abbbc", "acbc"], &["acb", "ab", "abcd"]);
        check("lr-?e-3", &["lr-1e-3", "lr-5e-3"], &["lr-1e-4", "lr-10e-3"]);
        check("fold[0-4]", &["fold0", "fold4"], &["fold5", "fold", "fold01"]);
        check("fold[!0-4]", &["fold5", "foldx"], &["fold0"]);
        check("[]x]", &["]", "x"], &["y"]);
        check("[a-]", &["a", "-"], &["b"]);
        check("a\\*b", &["a*b"], &["aXb"]);
        check("***x", &["x", "yyx"], &["xy"]);
        check("mnist", &["mnist"], &["mnist2", "mnis"]);
        check("é*", &["élan"], &["elan"]);
    }

    #[test]
    fn bad_patterns_are_explained() {
        for (pattern, says) in [("fold[0-4", "without its `]`"), ("x\\", "lone `\\`"), ("[z-a]", "backwards")]
        {
            let err = Glob::new(pattern).expect_err(pattern);
            assert!(err.contains(says), "{pattern}: {err}");
        }
    }

    #[test]
    fn many_stars_against_a_long_name_stay_quick() {
        let glob = Glob::new(&"*a".repeat(50)).expect("valid");
        let name = "a".repeat(49) + &"b".repeat(10_000);
        assert!(!glob.matches(&name));
    }
}
