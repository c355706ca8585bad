-- PostgreSQL: the search service's documents, one per product and per order, with a
-- generated tsvector of their words (title weighted above body) and a GIN index over it,
-- in place of SQLite's FTS5 table. The 'simple' configuration neither stems nor drops
-- stop words, like FTS5's unicode61 tokenizer.
CREATE TABLE search_document (
    kind TEXT NOT NULL CHECK (kind IN ('product', 'order')),
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    version BIGINT NOT NULL,
    words tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', body), 'B')
    ) STORED,
    PRIMARY KEY (kind, id)
);
CREATE INDEX search_document_words ON search_document USING GIN (words);
