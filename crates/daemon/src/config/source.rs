//! The pre-pass over the configuration text: TOML with spans in, plain tables with positions out.
//!
//! [`Source::section`] turns one table of the file (`[daemon]`, one `[[notifier]]`) into a [`Section`]: a
//! `toml::Table` whose strings are interpolated (`${VAR}`, `${VAR:-default}`, `$${`) and whose `K_file`
//! keys are replaced by `K` read from the file, plus the line and column of every key and value. The typed
//! sections are then deserialized from that table with serde, and [`Section::place`] puts the file, line,
//! column and key path on their errors. This module knows no key of any section and imports nothing else
//! of the crate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herald_plugin::ConfigError;
use toml::de::{DeTable, DeValue};
use toml::{Spanned, Value};

/// A byte range of the configuration text.
pub(super) type Span = std::ops::Range<usize>;

/// A 1-based line and column.
pub(super) type Position = (usize, usize);

/// What a string whose variables could not be replaced starts with in a section's table, and the message
/// of the serde error for reading it, which [`Section::place`] replaces with the pre-pass's error.
pub(super) const UNREAD: &str = "\u{0}unread";

/// The configuration text and what reading it needs.
pub(super) struct Source<'a> {
    text: &'a str,
    /// The file name in errors.
    pub origin: &'a str,
    /// The environment, for interpolation, `~` and the default folders.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The folder relative paths are taken from; none for the built-in configuration.
    base_dir: Option<PathBuf>,
}

/// One table of the file, ready for serde, with where each of its keys and values is.
#[derive(Debug, Clone, Default)]
pub(super) struct Section {
    /// The key path of the table in messages: `daemon`, `notifier[1]`.
    pub label: String,
    /// Line and column of the table itself (its header).
    pub at: Position,
    /// The keys, strings interpolated, `K_file` keys read into `K`.
    pub table: toml::Table,
    /// Dotted key path (`url`, `headers.X-Token`) -> where the key is.
    pub keys: BTreeMap<String, Position>,
    /// Top-level key (`events`) or array item (`events[1]`) -> where the value is.
    pub values: BTreeMap<String, Position>,
    /// Top-level key -> the first of its values that could not be read (an unset variable, an integer out
    /// of range). Reported when serde reads that string (see [`UNREAD`]) or by [`Section::check`], so that
    /// an unknown key or a value of the wrong type is reported as such. Meanwhile an integer out of range
    /// is the largest of its sign.
    deferred: BTreeMap<String, ConfigError>,
}

impl<'a> Source<'a> {
    /// The text of `origin`; relative paths in it are taken from `origin`'s folder unless it is `built_in`.
    pub fn new(
        text: &'a str,
        origin: &'a str,
        env: &'a dyn Fn(&str) -> Option<String>,
        built_in: bool,
    ) -> Source<'a> {
        let base_dir = match built_in {
            true => None,
            false => Path::new(origin).parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf),
        };
        Source { text, origin, env, base_dir }
    }

    /// The top-level table, or the TOML syntax error with its position.
    pub fn root(&self) -> Result<DeTable<'a>, ConfigError> {
        let root = DeTable::parse(self.text).map_err(|e| {
            let message = format!("invalid TOML: {}", e.message().trim());
            match e.span() {
                Some(span) => self.err(&span, "", message),
                None => ConfigError::new(message),
            }
        })?;
        Ok(root.into_inner())
    }

    /// The 1-based line and column (in characters) of a span's start.
    pub fn position(&self, span: &Span) -> Position {
        let offset = span.start.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    /// An error at `span` about `key` (a full path such as `daemon.listen`; empty for none).
    pub fn err(&self, span: &Span, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.position(span);
        let err = ConfigError::new(message).at(line, column);
        if key.is_empty() { err } else { err.under(key) }
    }

    /// A path from the configuration: `~` is the home folder, a relative path is taken from the file's
    /// folder.
    pub fn path(&self, s: &str) -> PathBuf {
        let home = || (self.env)("HOME").filter(|h| !h.is_empty());
        let expanded = match s.strip_prefix("~/") {
            Some(rest) => home().map_or_else(|| PathBuf::from(s), |h| PathBuf::from(h).join(rest)),
            None if s == "~" => (self.env)("HOME").map_or_else(|| PathBuf::from(s), PathBuf::from),
            None => PathBuf::from(s),
        };
        match &self.base_dir {
            Some(base) if expanded.is_relative() => base.join(expanded),
            _ => expanded,
        }
    }

    /// The pre-pass over one table: `not_table` is the message when `value` is not a table.
    pub fn section(
        &self,
        value: Spanned<DeValue>,
        label: &str,
        not_table: &str,
    ) -> Result<Section, ConfigError> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            return Err(self.err(&span, label, not_table));
        };
        let mut section = Section { label: label.to_owned(), at: self.position(&span), ..Section::default() };
        let names: Vec<String> = table.keys().map(|k| k.get_ref().to_string()).collect();
        for (key, value) in &table {
            let name = key.get_ref().as_ref();
            let base = name.strip_suffix("_file").filter(|b| !b.is_empty());
            let (name, converted) = match (base, value.get_ref()) {
                (Some(base), DeValue::String(path)) => {
                    let full = join(label, name);
                    if names.iter().any(|n| n == base) {
                        let message = format!("set either `{base}` or `{name}`, not both");
                        return Err(self.err(&key.span(), &full, message));
                    }
                    (base, self.read_file(path, &value.span(), &full)?)
                }
                _ => {
                    let mut unread = None;
                    let converted = self.value(value, name, label, &mut section.keys, &mut unread);
                    if let Some(err) = unread {
                        section.deferred.insert(name.to_owned(), err);
                    }
                    (name, converted)
                }
            };
            section.keys.insert(name.to_owned(), self.position(&key.span()));
            section.values.insert(name.to_owned(), self.position(&value.span()));
            if let DeValue::Array(items) = value.get_ref() {
                for (i, item) in items.iter().enumerate() {
                    section.values.insert(format!("{name}[{i}]"), self.position(&item.span()));
                }
            }
            section.table.insert(name.to_owned(), converted);
        }
        Ok(section)
    }

    /// The value of a `K_file` key (`path`, at `span`): the file's text without its trailing newlines,
    /// taken literally (`$` in a secret is not interpolated).
    fn read_file(&self, path: &str, span: &Span, key: &str) -> Result<Value, ConfigError> {
        let path = self.path(&interpolate(path, self.env).map_err(|m| self.err(span, key, m))?);
        let contents = std::fs::read_to_string(&path)
            .map_err(|e| self.err(span, key, format!("cannot read `{}`: {e}", path.display())))?;
        Ok(Value::String(contents.trim_end_matches(['\n', '\r']).to_owned()))
    }

    /// A value as a `toml::Value`, strings interpolated, the positions of nested keys recorded in `keys`,
    /// and the first part that cannot be read in `unread`.
    fn value(
        &self,
        v: &Spanned<DeValue>,
        path: &str,
        label: &str,
        keys: &mut BTreeMap<String, Position>,
        unread: &mut Option<ConfigError>,
    ) -> Value {
        let full = join(label, path);
        let mut defer = |message: &str| {
            unread.get_or_insert_with(|| self.err(&v.span(), &full, message));
        };
        match v.get_ref() {
            DeValue::String(s) => match interpolate(s, self.env) {
                Ok(s) => Value::String(s),
                Err(message) => {
                    defer(&message);
                    Value::String(format!("{UNREAD}{s}"))
                }
            },
            DeValue::Integer(i) => {
                Value::Integer(i64::from_str_radix(i.as_str(), i.radix()).unwrap_or_else(|_| {
                    defer("integer out of range");
                    if i.as_str().starts_with('-') { i64::MIN } else { i64::MAX }
                }))
            }
            DeValue::Float(f) => {
                Value::Float(f.as_str().replace('_', "").parse::<f64>().unwrap_or_else(|_| {
                    defer("invalid float");
                    f64::NAN
                }))
            }
            DeValue::Boolean(b) => Value::Boolean(*b),
            DeValue::Datetime(d) => Value::Datetime(*d),
            DeValue::Array(items) => {
                Value::Array(items.iter().map(|item| self.value(item, path, label, keys, unread)).collect())
            }
            DeValue::Table(t) => {
                let mut out = toml::Table::new();
                for (key, item) in t {
                    let sub = join(path, key.get_ref());
                    keys.insert(sub.clone(), self.position(&key.span()));
                    out.insert(key.get_ref().to_string(), self.value(item, &sub, label, keys, unread));
                }
                Value::Table(out)
            }
        }
    }
}

impl Section {
    /// A table the file does not have: no keys, at the file's start.
    pub fn empty(label: &str) -> Section {
        Section { label: label.to_owned(), at: (1, 1), ..Section::default() }
    }

    /// The first value the pre-pass could not read, if any.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.deferred.values().next().cloned().map_or(Ok(()), Err)
    }

    /// Move `names` (those present) out of the table, into a table of their own.
    pub fn take(&mut self, names: &[&str]) -> toml::Table {
        names.iter().filter_map(|n| self.table.remove(*n).map(|v| ((*n).to_owned(), v))).collect()
    }

    /// Give an error about a key of this section its position and full key path. An unknown key is
    /// pointed at by the key, any other by its value (`events[1]`: the item, shown as `events`), an error
    /// on no key, or on a key not in the file, by the table; a position already set is kept.
    pub fn place(&self, err: ConfigError) -> ConfigError {
        let key = err.key.clone().unwrap_or_default();
        if let (UNREAD, Some(unread)) = (err.message.as_str(), self.deferred.get(&key)) {
            return unread.clone();
        }
        let position = match err.message.starts_with("unknown key") {
            true => self.keys.get(&key),
            false => self.values.get(&key).or_else(|| self.keys.get(&key)),
        };
        let (line, column) = position.copied().unwrap_or(self.at);
        let shown: String = key.split('[').next().unwrap_or_default().to_owned();
        let err = ConfigError { key: (!shown.is_empty()).then_some(shown), ..err };
        err.under(&self.label).at(line, column)
    }
}

/// `parent.key`, or `key` alone.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

/// Replace `${VAR}` and `${VAR:-default}` (default when VAR is unset or empty); `$${` is a literal `${`.
pub fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                "`${` without a closing `}`; write `${NAME}`, or `$${` for a literal `${`".to_owned()
            })?;
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "`${{{inner}}}` does not name an environment variable; write `${{NAME}}` or `${{NAME:-default}}`"
                ));
            }
            let value = env(name).filter(|v| default.is_none() || !v.is_empty());
            match (value, default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set; set it, or write `${{{name}:-default}}`"
                    ));
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
