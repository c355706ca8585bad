//! Consistency token passed from a write to a later read.
//!
//! A write answers with a token naming the aggregates it changed and their new
//! versions; a later read sends it back so the reading service can wait until
//! its replica has caught up. The text form is a comma-separated list of
//! `scope/key@version` entries, e.g. `customer/c-42@7,catalog/p-1@3`.

use std::fmt;
use std::str::FromStr;

/// Expected shape of one entry, quoted in parse errors.
const ENTRY_FORM: &str = "scope/key@version";

/// Why a token or one of its entries was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text held no entries at all.
    #[error("consistency token is empty; expected entries of the form `{ENTRY_FORM}`")]
    Empty,
    /// Two commas (or a leading or trailing comma) left an entry blank.
    #[error("token entry {position} is empty; expected `{ENTRY_FORM}`")]
    EmptyEntry { position: usize },
    /// The scope was empty or used characters outside `[a-z0-9_-]`.
    #[error("invalid scope `{0}`: expected one or more of a-z, 0-9, `_` or `-`")]
    InvalidScope(String),
    /// The key was empty or contained `,`, `@` or whitespace.
    #[error("invalid key `{0}`: expected a non-empty key without `,`, `@` or whitespace")]
    InvalidKey(String),
    /// One entry of a token's text form could not be read.
    #[error("malformed token entry `{entry}`: {reason}; expected `{ENTRY_FORM}`")]
    MalformedEntry { entry: String, reason: String },
}

/// One aggregate a write changed, with the version it reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenEntry {
    scope: String,
    key: String,
    version: u64,
}

impl TokenEntry {
    /// Builds an entry after checking that scope and key survive the text form.
    pub fn new(scope: &str, key: &str, version: u64) -> Result<Self, TokenError> {
        if !is_valid_scope(scope) {
            return Err(TokenError::InvalidScope(scope.to_owned()));
        }
        if !is_valid_key(key) {
            return Err(TokenError::InvalidKey(key.to_owned()));
        }
        Ok(Self { scope: scope.to_owned(), key: key.to_owned(), version })
    }

    /// Names the service area the aggregate belongs to, e.g. `customer`.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Identifies the aggregate within its scope; may contain `/`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Gives the version the write brought the aggregate to.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn same_aggregate(&self, other: &TokenEntry) -> std::cmp::Ordering {
        (self.scope.as_str(), self.key.as_str()).cmp(&(other.scope.as_str(), other.key.as_str()))
    }
}

impl fmt::Display for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.scope, self.key, self.version)
    }
}

impl FromStr for TokenEntry {
    type Err = TokenError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let malformed = |reason: String| TokenError::MalformedEntry { entry: entry.to_owned(), reason };
        // Scopes never contain `/`, so the first one ends the scope; keys never
        // contain `@`, so the last one starts the version.
        let (scope, rest) =
            entry.split_once('/').ok_or_else(|| malformed("missing `/` between scope and key".to_owned()))?;
        let (key, version) =
            rest.rsplit_once('@').ok_or_else(|| malformed("missing `@` before the version".to_owned()))?;
        if version.is_empty() {
            return Err(malformed("missing version after `@`".to_owned()));
        }
        // `u64::from_str` accepts a leading `+`, which the text form does not.
        let version = version
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| version.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| malformed(format!("version `{version}` is not an unsigned integer")))?;
        TokenEntry::new(scope, key, version).map_err(|error| malformed(error.to_string()))
    }
}

fn is_valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && !key.chars().any(|c| c == ',' || c == '@' || c.is_whitespace())
}

/// The aggregates a write changed, at most one entry per `(scope, key)` and
/// kept sorted, so equal tokens have equal text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsistencyToken {
    entries: Vec<TokenEntry>,
}

impl ConsistencyToken {
    /// Creates a token naming no aggregates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells whether the token names no aggregates (and so requires no wait).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lists the entries sorted by scope, then key.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// Adds an entry; if the aggregate is already named, the higher version
    /// wins, since a reader that caught up to it has caught up to both.
    pub fn with(mut self, entry: TokenEntry) -> Self {
        match self.entries.binary_search_by(|probe| probe.same_aggregate(&entry)) {
            Ok(index) => {
                let existing = &mut self.entries[index];
                existing.version = existing.version.max(entry.version);
            }
            Err(index) => self.entries.insert(index, entry),
        }
        self
    }

    /// Combines two tokens, keeping the higher version for shared aggregates.
    pub fn merge(self, other: ConsistencyToken) -> Self {
        other.entries.into_iter().fold(self, Self::with)
    }

    /// Lists the entries belonging to one scope, e.g. those a service owns.
    pub fn for_scope<'a>(&'a self, scope: &'a str) -> impl Iterator<Item = &'a TokenEntry> + 'a {
        // Entries are sorted by scope first, so one scope is a contiguous run.
        let start = self.entries.partition_point(|entry| entry.scope.as_str() < scope);
        self.entries[start..].iter().take_while(move |entry| entry.scope == scope)
    }
}

impl fmt::Display for ConsistencyToken {
    /// Writes the canonical text form; an empty token writes nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, entry) in self.entries.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

impl FromStr for ConsistencyToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Err(TokenError::Empty);
        }
        text.split(',').enumerate().try_fold(Self::new(), |token, (index, entry)| {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(TokenError::EmptyEntry { position: index + 1 });
            }
            Ok(token.with(entry.parse()?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(scope: &str, key: &str, version: u64) -> TokenEntry {
        TokenEntry::new(scope, key, version).expect("valid test entry")
    }

    fn parse(text: &str) -> ConsistencyToken {
        text.parse().expect("valid test token")
    }

    fn parse_error(text: &str) -> TokenError {
        match text.parse::<ConsistencyToken>() {
            Ok(token) => panic!("expected `{text}` to be rejected, got {token:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn round_trips_through_text() {
        let token =
            ConsistencyToken::new().with(entry("customer", "c-42", 7)).with(entry("catalog", "p-1", 3));
        let text = token.to_string();
        assert_eq!(text, "catalog/p-1@3,customer/c-42@7");
        assert_eq!(parse(&text), token);
    }

    #[test]
    fn parses_the_documented_example() {
        let token = parse("customer/c-42@7,catalog/p-1@3");
        let customer = &token.entries()[1];
        assert_eq!(customer.scope(), "customer");
        assert_eq!(customer.key(), "c-42");
        assert_eq!(customer.version(), 7);
        assert_eq!(token.entries()[0], entry("catalog", "p-1", 3));
    }

    #[test]
    fn with_keeps_the_highest_version_for_an_aggregate() {
        let token =
            ConsistencyToken::new().with(entry("customer", "c-42", 7)).with(entry("customer", "c-42", 3));
        assert_eq!(token.entries(), [entry("customer", "c-42", 7)]);

        let token = token.with(entry("customer", "c-42", 9));
        assert_eq!(token.entries(), [entry("customer", "c-42", 9)]);
    }

    #[test]
    fn merge_keeps_the_highest_version_and_all_aggregates() {
        let ours = parse("customer/c-42@7,catalog/p-1@3");
        let theirs = parse("customer/c-42@5,catalog/p-1@4,order/o-9@1");
        let merged = ours.clone().merge(theirs.clone());
        assert_eq!(merged.to_string(), "catalog/p-1@4,customer/c-42@7,order/o-9@1");
        assert_eq!(theirs.merge(ours), merged);
    }

    #[test]
    fn keys_may_contain_slashes() {
        let token = parse("media/images/2024/cat.png@12");
        let only = &token.entries()[0];
        assert_eq!(only.scope(), "media");
        assert_eq!(only.key(), "images/2024/cat.png");
        assert_eq!(only.version(), 12);
        assert_eq!(token.to_string(), "media/images/2024/cat.png@12");
    }

    #[test]
    fn display_is_canonical_and_sorted() {
        let token = ConsistencyToken::new()
            .with(entry("order", "o-2", 1))
            .with(entry("catalog", "p-9", 2))
            .with(entry("order", "o-10", 5))
            .with(entry("catalog", "p-1", 4));
        assert_eq!(token.to_string(), "catalog/p-1@4,catalog/p-9@2,order/o-10@5,order/o-2@1");
        assert_eq!(
            parse(" order/o-2@1 , catalog/p-9@2,order/o-10@5,catalog/p-1@4 ").to_string(),
            token.to_string()
        );
    }

    #[test]
    fn duplicate_entries_in_text_merge_to_the_highest_version() {
        let token = parse("customer/c-42@7,customer/c-42@11,customer/c-42@2");
        assert_eq!(token.entries(), [entry("customer", "c-42", 11)]);
        assert_eq!(token.to_string(), "customer/c-42@11");
    }

    #[test]
    fn tolerates_spaces_around_entries() {
        let token = parse("  customer/c-42@7 ,\tcatalog/p-1@3  ");
        assert_eq!(token, parse("customer/c-42@7,catalog/p-1@3"));
    }

    #[test]
    fn for_scope_lists_only_that_scope() {
        let token = parse("customer/c-1@1,catalog/p-1@3,customer/c-2@2,order/o-1@4");
        let customers: Vec<&TokenEntry> = token.for_scope("customer").collect();
        assert_eq!(customers, [&entry("customer", "c-1", 1), &entry("customer", "c-2", 2)]);
        assert_eq!(token.for_scope("billing").count(), 0);
    }

    #[test]
    fn a_new_token_is_empty_and_prints_nothing() {
        let token = ConsistencyToken::new();
        assert!(token.is_empty());
        assert_eq!(token.to_string(), "");
        assert!(!token.with(entry("customer", "c-1", 1)).is_empty());
    }

    #[test]
    fn rejects_empty_and_blank_text() {
        assert_eq!(parse_error(""), TokenError::Empty);
        assert_eq!(parse_error("  \t "), TokenError::Empty);
        assert!(TokenError::Empty.to_string().contains("`scope/key@version`"));
    }

    #[test]
    fn rejects_blank_entries_naming_their_position() {
        let error = parse_error("customer/c-1@1,,catalog/p-1@3");
        assert_eq!(error, TokenError::EmptyEntry { position: 2 });
        assert_eq!(error.to_string(), "token entry 2 is empty; expected `scope/key@version`");
        assert_eq!(parse_error("customer/c-1@1,"), TokenError::EmptyEntry { position: 2 });
    }

    #[test]
    fn rejects_each_malformed_entry_naming_it_and_the_expected_form() {
        let cases = [
            ("customer-c-42@7", "missing `/` between scope and key"),
            ("customer/c-42", "missing `@` before the version"),
            ("customer/c-42@", "missing version after `@`"),
            ("customer/c-42@seven", "version `seven` is not an unsigned integer"),
            ("customer/c-42@-1", "version `-1` is not an unsigned integer"),
            ("customer/c-42@+1", "version `+1` is not an unsigned integer"),
            (
                "customer/c-42@18446744073709551616",
                "version `18446744073709551616` is not an unsigned integer",
            ),
            ("/c-42@7", "invalid scope ``"),
            ("Customer/c-42@7", "invalid scope `Customer`"),
            ("cust omer/c-42@7", "invalid scope `cust omer`"),
            ("customer/@7", "invalid key ``"),
            ("customer/c@42@7", "invalid key `c@42`"),
            ("customer/c 42@7", "invalid key `c 42`"),
        ];
        for (bad, reason) in cases {
            let error = parse_error(&format!("catalog/p-1@3, {bad} "));
            let message = error.to_string();
            assert!(
                matches!(&error, TokenError::MalformedEntry { entry, .. } if entry == bad),
                "`{bad}` gave {error:?}"
            );
            assert!(
                message.starts_with(&format!("malformed token entry `{bad}`: ")),
                "`{bad}` gave: {message}"
            );
            assert!(message.contains(reason), "`{bad}` gave: {message}");
            assert!(message.ends_with("expected `scope/key@version`"), "`{bad}` gave: {message}");
        }
    }

    #[test]
    fn new_entry_validates_scope_and_key() {
        assert_eq!(
            TokenEntry::new("Customer", "c-1", 1),
            Err(TokenError::InvalidScope("Customer".to_owned()))
        );
        assert_eq!(TokenEntry::new("", "c-1", 1), Err(TokenError::InvalidScope(String::new())));
        assert_eq!(TokenEntry::new("customer", "c,1", 1), Err(TokenError::InvalidKey("c,1".to_owned())));
        assert_eq!(TokenEntry::new("customer", "", 1), Err(TokenError::InvalidKey(String::new())));
        assert_eq!(TokenEntry::new("customer", "c-1\n", 1), Err(TokenError::InvalidKey("c-1\n".to_owned())));
        let slashed = entry("under_score-9", "a/b/c", u64::MAX);
        assert_eq!(slashed.to_string(), "under_score-9/a/b/c@18446744073709551615");
    }
}
