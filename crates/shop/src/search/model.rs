//! What the index holds (one document per product and per order) and what a search asks,
//! validated once at the edge.

use serde::{Deserialize, Serialize};

use crate::contracts::catalog::Product;
use crate::contracts::order::Order;
use crate::service::Problem;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    /// FTS5 refused the query text; the message is SQLite's.
    #[error(
        "the query cannot be parsed ({0}); quote words that hold punctuation and close every quote, e.g. \"p-001\""
    )]
    Unparsable(String),
    #[error(transparent)]
    Store(#[from] kit::store::StoreError),
}

impl From<SearchError> for Problem {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Invalid { .. } | SearchError::Unparsable(_) => Problem::bad_request(e.to_string()),
            SearchError::Store(e) => e.into(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SearchError {
    SearchError::Invalid { field, reason: reason.into() }
}

/// What a document is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Product,
    Order,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Product => "product",
            Kind::Order => "order",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Kind::Product, Kind::Order].into_iter().find(|k| k.as_str() == text)
    }
}

/// One indexed thing: its title and body are what the full-text index matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub kind: Kind,
    pub id: String,
    pub title: String,
    pub body: String,
    /// The version of the product or order it was made from.
    pub version: u64,
    /// The customer an order document belongs to: only they find it. `None` for a product.
    pub owner: Option<String>,
}

fn euros(cents: u64) -> String {
    format!("€{}.{:02}", cents / 100, cents % 100)
}

impl Document {
    /// A product is found by its name, its description, its id and its price.
    pub fn product(product: &Product) -> Self {
        Self {
            kind: Kind::Product,
            id: product.id.clone(),
            title: product.name.clone(),
            body: format!("{} · {} · price {}", product.description, product.id, euros(product.price_cents)),
            version: product.version,
            owner: None,
        }
    }

    /// An order is found by its id, its customer, its status and the names of its products.
    pub fn order(order: &Order) -> Self {
        let lines: Vec<String> = order.lines.iter().map(|l| format!("{} × {}", l.quantity, l.name)).collect();
        Self {
            kind: Kind::Order,
            id: order.id.clone(),
            title: format!("order {} of {}", order.id, order.customer_id),
            body: format!(
                "{} · customer {} · status {} · {}",
                lines.join(", "),
                order.customer_id,
                order.status.as_str(),
                euros(order.total_cents)
            ),
            version: order.version,
            owner: Some(order.customer_id.clone()),
        }
    }
}

/// A search as asked: `q` in words or in FTS5 query syntax, optionally one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub text: String,
    /// What is handed to FTS5 `MATCH`.
    pub expression: String,
    pub kind: Option<Kind>,
    pub limit: u32,
}

impl SearchQuery {
    pub const DEFAULT_LIMIT: u32 = 20;
    pub const MAX_LIMIT: u32 = 100;

    pub fn parse(q: Option<&str>, kind: Option<&str>, limit: Option<u32>) -> Result<Self, SearchError> {
        let text = q.unwrap_or_default().trim();
        if text.is_empty() {
            return Err(invalid("q", "must not be empty: say what to search for, e.g. ?q=mug"));
        }
        if text.chars().count() > 200 {
            return Err(invalid("q", "must be at most 200 characters"));
        }
        let kind = kind
            .map(|k| {
                Kind::parse(k).ok_or_else(|| invalid("kind", format!("{k:?} is neither product nor order")))
            })
            .transpose()?;
        let limit = limit_of(limit, Self::DEFAULT_LIMIT)?;
        Ok(Self { text: text.to_owned(), expression: expression(text), kind, limit })
    }
}

/// A `limit` of results: 1 to [`SearchQuery::MAX_LIMIT`], `default` when absent.
pub fn limit_of(limit: Option<u32>, default: u32) -> Result<u32, SearchError> {
    let limit = limit.unwrap_or(default);
    if !(1..=SearchQuery::MAX_LIMIT).contains(&limit) {
        return Err(invalid("limit", format!("must be between 1 and {}", SearchQuery::MAX_LIMIT)));
    }
    Ok(limit)
}

/// The FTS5 expression for `text`: text that uses FTS5 syntax (quotes, parentheses,
/// column filters, prefixes, `AND`/`OR`/`NOT`) is taken as it is; plain words are quoted
/// one by one, so `p-001` or `19.99` match as written and every word must match.
pub fn expression(text: &str) -> String {
    let syntax = text.contains(['"', '(', ')', ':', '*', '^', '+', '{', '}'])
        || text.split_whitespace().any(|w| matches!(w, "AND" | "OR" | "NOT" | "NEAR"));
    if syntax {
        text.to_owned()
    } else {
        text.split_whitespace().map(|word| format!("\"{word}\"")).collect::<Vec<_>>().join(" ")
    }
}

/// One match, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Hit {
    pub kind: Kind,
    pub id: String,
    pub title: String,
    /// The best matching passage, matched words in `[` `]`.
    pub snippet: String,
    /// Relevance (BM25, title words weigh more); higher is better.
    pub score: f64,
    /// The version of the product or order the index holds.
    pub version: u64,
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn plain_words_are_quoted_and_fts5_syntax_is_kept() {
        assert_eq!(expression("blue  p-001"), "\"blue\" \"p-001\"");
        assert_eq!(expression("mug OR kettle"), "mug OR kettle");
        assert_eq!(expression("tit*"), "tit*");
        assert_eq!(expression("\"blue mug"), "\"blue mug");
    }

    #[test]
    fn empty_queries_unknown_kinds_and_limits_out_of_range_are_refused() {
        assert!(SearchQuery::parse(Some("  "), None, None).is_err());
        assert!(SearchQuery::parse(None, None, None).is_err());
        assert!(SearchQuery::parse(Some("mug"), Some("customer"), None).is_err());
        assert!(SearchQuery::parse(Some("mug"), None, Some(0)).is_err());
        let query = SearchQuery::parse(Some(" mug "), Some("order"), None).unwrap();
        assert_eq!((query.text.as_str(), query.kind, query.limit), ("mug", Some(Kind::Order), 20));
    }
}
