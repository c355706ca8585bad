-- Whose document it is: the customer of an order (only they find it), NULL for a product.
ALTER TABLE search_document ADD COLUMN owner TEXT;
-- Orders indexed before: their title is "order <id> of <customer>".
UPDATE search_document SET owner = substr(title, instr(title, ' of ') + 4) WHERE kind = 'order';
