-- The search service: one document per product and per order, and an FTS5 index over
-- their titles and bodies that triggers keep equal to the documents.
CREATE TABLE search_document (
    doc INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('product', 'order')),
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    version INTEGER NOT NULL,
    UNIQUE (kind, id)
);

CREATE VIRTUAL TABLE search_fts USING fts5(
    title, body,
    content = 'search_document', content_rowid = 'doc',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER search_document_inserted AFTER INSERT ON search_document BEGIN
    INSERT INTO search_fts (rowid, title, body) VALUES (new.doc, new.title, new.body);
END;

CREATE TRIGGER search_document_deleted AFTER DELETE ON search_document BEGIN
    INSERT INTO search_fts (search_fts, rowid, title, body) VALUES ('delete', old.doc, old.title, old.body);
END;

CREATE TRIGGER search_document_updated AFTER UPDATE ON search_document BEGIN
    INSERT INTO search_fts (search_fts, rowid, title, body) VALUES ('delete', old.doc, old.title, old.body);
    INSERT INTO search_fts (rowid, title, body) VALUES (new.doc, new.title, new.body);
END;

-- Always empty: a query that fails here cannot be parsed, whatever the index holds.
CREATE VIRTUAL TABLE search_query_probe USING fts5(title, body);
