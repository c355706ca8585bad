//! Pages of a list (OWASP API4: no unbounded answer): `limit` (1 to 100, 100 when absent)
//! and an opaque `cursor`; an answer that may go on says where in `Next-Cursor`, to be sent
//! back as `cursor`. Lists are keyset-paged by their id, so a page never repeats or skips
//! an item when items are added meanwhile.

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};

use super::Problem;

pub const NEXT_CURSOR: HeaderName = HeaderName::from_static("next-cursor");
pub const MAX_LIMIT: u32 = 100;

/// A `cursor` as the lists take it: base64url without padding (what `Next-Cursor` says).
/// The document names this rule once for every list's `cursor`; any value it allows is
/// read, a cursor no list answered just starts after the key it spells.
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$")]
pub struct Cursor(pub String);

/// Reads every cursor the [`Cursor`] pattern allows: unused trailing bits are ignored.
const CURSOR: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Which page a request asks for: at most `limit` items after the id `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

impl Page {
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, Problem> {
        let limit = limit.unwrap_or(MAX_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Problem::unprocessable(format!("limit must be between 1 and {MAX_LIMIT}")));
        }
        let after = cursor
            .map(|c| {
                CURSOR
                    .decode(c)
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .map_err(|_| Problem::unprocessable("cursor is not one this list answered"))
            })
            .transpose()?;
        Ok(Self { limit, after })
    }

    /// How many rows to read: one more than the page, to know whether another follows.
    pub fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// Answers `items` (read with [`Page::fetch`]) as this page, with `Next-Cursor` after
    /// the last one shown when more follow.
    pub fn answer<T: serde::Serialize>(&self, mut items: Vec<T>, id: impl Fn(&T) -> &str) -> Response {
        let more = items.len() > self.limit as usize;
        items.truncate(self.limit as usize);
        let next = items.last().filter(|_| more).map(|last| URL_SAFE_NO_PAD.encode(id(last)));
        let mut response = axum::Json(items).into_response();
        if let Some(next) = next {
            response
                .headers_mut()
                .insert(NEXT_CURSOR, HeaderValue::from_str(&next).expect("base64 is header-safe"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_answers_its_items_and_the_cursor_of_the_next() {
        let page = Page::parse(Some(2), None).unwrap();
        let answer = page.answer(vec!["o-1".to_owned(), "o-2".into(), "o-3".into()], |s| s);
        let next = answer.headers()[NEXT_CURSOR].to_str().unwrap().to_owned();
        assert_eq!(Page::parse(Some(2), Some(&next)).unwrap().after.as_deref(), Some("o-2"));
        let last = Page::parse(Some(2), Some(&next)).unwrap().answer(vec!["o-3".to_owned()], |s| s);
        assert!(last.headers().get(NEXT_CURSOR).is_none());
        assert_eq!(Page::parse(Some(0), None).unwrap_err().status, 422);
        assert_eq!(Page::parse(Some(101), None).unwrap_err().status, 422);
        assert_eq!(Page::parse(None, Some("!!")).unwrap_err().status, 422);
    }

    #[test]
    fn every_cursor_the_documented_pattern_allows_is_read() {
        // Trailing bits set ("AB"), bytes that are not UTF-8 ("_w"): both fit the pattern.
        for cursor in ["AB", "_w", "bzI", "by0y"] {
            assert!(Page::parse(None, Some(cursor)).is_ok(), "{cursor}");
        }
        assert_eq!(Page::parse(None, Some("by0y")).unwrap().after.as_deref(), Some("o-2"));
        assert_eq!(Page::parse(None, Some("A")).unwrap_err().status, 422, "5 bits spell nothing");
    }
}
