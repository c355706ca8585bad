//! The search service's SQL: documents in `search_document`, matched on SQLite through
//! the FTS5 table `search_fts` that triggers keep in step with them, and on PostgreSQL
//! through the document's generated `tsvector` column.

use kit::store::{Dialect, Row, StoreError, Tx};

use super::model::{Document, Hit, Kind, SearchError, SearchQuery};

/// Weights of the title and body columns in the BM25 ranking.
const RANKING: &str = "bm25(search_fts, 5.0, 1.0)";

/// Saves `document` as the one of its kind and id, replacing what the index held.
pub fn put(tx: &mut Tx<'_>, document: &Document) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO search_document (kind, id, title, body, version, owner) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (kind, id) DO UPDATE SET title = excluded.title, body = excluded.body, \
         version = excluded.version, owner = excluded.owner",
        &[
            document.kind.as_str().into(),
            document.id.as_str().into(),
            document.title.as_str().into(),
            document.body.as_str().into(),
            document.version.into(),
            document.owner.as_deref().into(),
        ],
    )?;
    Ok(())
}

/// The document of `kind` and `id`, if the index holds one.
pub fn document(tx: &mut Tx<'_>, kind: Kind, id: &str) -> Result<Option<Document>, StoreError> {
    let row = tx.query_opt(
        "SELECT title, body, version, owner FROM search_document WHERE kind = $1 AND id = $2",
        &[kind.as_str().into(), id.into()],
    )?;
    row.map(|mut row| {
        Ok(Document {
            kind,
            id: id.to_owned(),
            title: row.take(0)?,
            body: row.take(1)?,
            version: row.get(2)?,
            owner: row.take(3)?,
        })
    })
    .transpose()
}

/// Every document, by kind and id (for comparing whole indexes in tests).
pub fn documents(tx: &mut Tx<'_>) -> Result<Vec<Document>, StoreError> {
    let rows =
        tx.query("SELECT kind, id, title, body, version, owner FROM search_document ORDER BY kind, id", &[])?;
    rows.into_iter()
        .map(|mut row| {
            let kind: String = row.take(0)?;
            Ok(Document {
                kind: Kind::parse(&kind)
                    .ok_or_else(|| StoreError::Database(format!("unknown document kind {kind:?}")))?,
                id: row.take(1)?,
                title: row.take(2)?,
                body: row.take(3)?,
                version: row.get(4)?,
                owner: row.take(5)?,
            })
        })
        .collect()
}

/// How many documents of `kind` the index holds.
pub fn count(tx: &mut Tx<'_>, kind: Kind) -> Result<u64, StoreError> {
    tx.query_one("SELECT count(*) FROM search_document WHERE kind = $1", &[kind.as_str().into()])?.get(0)
}

fn hit_from_row(mut row: Row) -> Result<Hit, StoreError> {
    let kind: String = row.take(0)?;
    Ok(Hit {
        kind: Kind::parse(&kind)
            .ok_or_else(|| StoreError::Database(format!("unknown document kind {kind:?}")))?,
        id: row.take(1)?,
        title: row.take(2)?,
        snippet: row.take(3)?,
        score: row.get(4)?,
        version: row.get(5)?,
    })
}

/// The documents matching `query`, best first. A query FTS5 cannot parse is
/// [`SearchError::Unparsable`]; any other failure is the store's.
/// Matches products, and the orders of `shopper` (none without one).
pub fn search(tx: &mut Tx<'_>, query: &SearchQuery, shopper: Option<&str>) -> Result<Vec<Hit>, SearchError> {
    if tx.dialect() == Dialect::Postgres {
        return search_postgres(tx, query, shopper);
    }
    let sql = format!(
        "SELECT d.kind, d.id, d.title, snippet(search_fts, -1, '[', ']', '…', 12), -{RANKING}, d.version \
         FROM search_fts JOIN search_document d ON d.doc = search_fts.rowid \
         WHERE search_fts MATCH $1 AND ($2 IS NULL OR d.kind = $2) AND (d.kind = 'product' OR d.owner = $4) \
         ORDER BY {RANKING}, d.kind, d.id LIMIT $3"
    );
    let kind = query.kind.map(Kind::as_str);
    let params = [query.expression.as_str().into(), kind.into(), query.limit.into(), shopper.into()];
    match tx.query(&sql, &params) {
        Ok(rows) => Ok(rows.into_iter().map(hit_from_row).collect::<Result<_, _>>()?),
        Err(failure) => Err(unparsable(tx, &query.expression).unwrap_or(SearchError::Store(failure))),
    }
}

/// How `ts_headline` marks a snippet: like FTS5's `snippet(..., '[', ']', '…', 12)`.
const HEADLINE: &str =
    "StartSel=[, StopSel=], MaxWords=12, MinWords=3, ShortWord=0, MaxFragments=1, FragmentDelimiter=…";

/// The search on PostgreSQL. `websearch_to_tsquery` reads the text as typed (words must
/// all match, `"quoted phrases"`, `or`, `-word`) and refuses nothing, so no query is
/// unparsable there. Title words weigh five times body words, as in the FTS5 ranking.
fn search_postgres(
    tx: &mut Tx<'_>,
    query: &SearchQuery,
    shopper: Option<&str>,
) -> Result<Vec<Hit>, SearchError> {
    let sql = format!(
        "SELECT d.kind, d.id, d.title, \
         CASE WHEN to_tsvector('simple', d.body) @@ q THEN ts_headline('simple', d.body, q, '{HEADLINE}') \
         ELSE ts_headline('simple', d.title, q, '{HEADLINE}') END, \
         CAST(ts_rank('{{0, 0, 0.2, 1.0}}', d.words, q) AS DOUBLE PRECISION) AS score, d.version \
         FROM search_document d, websearch_to_tsquery('simple', $1) q \
         WHERE d.words @@ q AND (CAST($2 AS TEXT) IS NULL OR d.kind = $2) \
         AND (d.kind = 'product' OR d.owner = CAST($4 AS TEXT)) \
         ORDER BY score DESC, d.kind, d.id LIMIT $3"
    );
    let kind = query.kind.map(Kind::as_str);
    let rows =
        tx.query(&sql, &[query.text.as_str().into(), kind.into(), query.limit.into(), shopper.into()])?;
    Ok(rows.into_iter().map(hit_from_row).collect::<Result<_, _>>()?)
}

/// Whether FTS5 refuses `expression` itself: tried on an index that is always empty, so
/// nothing but the expression can fail.
fn unparsable(tx: &mut Tx<'_>, expression: &str) -> Option<SearchError> {
    let probe = "SELECT count(*) FROM search_query_probe WHERE search_query_probe MATCH $1";
    match tx.query(probe, &[expression.into()]) {
        Ok(_) => None,
        Err(StoreError::Database(message)) => Some(SearchError::Unparsable(message)),
        Err(_) => None,
    }
}
