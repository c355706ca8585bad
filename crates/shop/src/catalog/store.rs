//! The catalog's SQL. Every write of a product appends its event to the outbox in the same
//! transaction; quotes also count how often each product is asked for (see `popularity`
//! in the migration), which is local and publishes nothing.

use kit::outbox::Outbox;
use kit::store::{Row, StoreError, Tx};

use super::events::{self, Quote, QuoteLine};
use super::model::{Basket, CatalogError, NewProduct, PriceCents, Product, ProductId, ProductName};

const COLUMNS: &str = "id, name, description, price_cents, version";

fn product_from_row(mut row: Row) -> Result<Product, StoreError> {
    Ok(Product {
        id: row.take(0)?,
        name: row.take(1)?,
        description: row.take(2)?,
        price_cents: row.get(3)?,
        version: row.get(4)?,
    })
}

fn products(tx: &mut Tx<'_>, sql: &str, limit: Option<u64>) -> Result<Vec<Product>, CatalogError> {
    let rows = match limit {
        Some(limit) => tx.query(sql, &[limit.into()])?,
        None => tx.query(sql, &[])?,
    };
    Ok(rows.into_iter().map(product_from_row).collect::<Result<_, _>>()?)
}

fn find(tx: &mut Tx<'_>, id: &str) -> Result<Option<Product>, CatalogError> {
    let row = tx.query_opt(&format!("SELECT {COLUMNS} FROM product WHERE id = $1"), &[id.into()])?;
    Ok(row.map(product_from_row).transpose()?)
}

pub fn get(tx: &mut Tx<'_>, id: &ProductId) -> Result<Product, CatalogError> {
    find(tx, id.as_str())?.ok_or_else(|| CatalogError::NotFound(id.to_string()))
}

pub fn list(tx: &mut Tx<'_>) -> Result<Vec<Product>, CatalogError> {
    products(tx, &format!("SELECT {COLUMNS} FROM product ORDER BY id"), None)
}

pub fn count(tx: &mut Tx<'_>) -> Result<u64, StoreError> {
    tx.query_one("SELECT count(*) FROM product", &[])?.get(0)
}

/// The `limit` products named by the most quote lines; ties by id.
pub fn most_quoted(tx: &mut Tx<'_>, limit: u64) -> Result<Vec<Product>, CatalogError> {
    let sql = format!("SELECT {COLUMNS} FROM product ORDER BY popularity DESC, id LIMIT $1");
    products(tx, &sql, Some(limit))
}

/// The next free numbered id: one past the highest `p-NNN`.
fn next_id(tx: &mut Tx<'_>) -> Result<ProductId, CatalogError> {
    let rows = tx.query("SELECT id FROM product WHERE id LIKE 'p-%'", &[])?;
    let mut highest = 0;
    for row in rows {
        let id: String = row.get(0)?;
        if let Some(n) = ProductId::parse(&id).ok().and_then(|id| id.number()) {
            highest = highest.max(n);
        }
    }
    Ok(ProductId::numbered(highest + 1))
}

pub fn add(tx: &mut Tx<'_>, outbox: &Outbox, new: NewProduct) -> Result<Product, CatalogError> {
    let id = match new.id {
        Some(id) => id,
        None => next_id(tx)?,
    };
    if find(tx, id.as_str())?.is_some() {
        return Err(CatalogError::Exists(id.to_string()));
    }
    let product = Product {
        id: id.to_string(),
        name: new.name,
        description: new.description,
        price_cents: new.price.get(),
        version: 1,
    };
    tx.execute(
        &format!("INSERT INTO product ({COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
        &[
            product.id.as_str().into(),
            product.name.as_str().into(),
            product.description.as_str().into(),
            product.price_cents.into(),
            product.version.into(),
        ],
    )?;
    outbox.append(tx, vec![events::event(events::PRODUCT_ADDED, &product)])?;
    Ok(product)
}

/// Sets a product's price. Setting the price it already has changes nothing and
/// publishes nothing, so a repeated PUT is harmless.
pub fn change_price(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    id: &ProductId,
    price: PriceCents,
) -> Result<Product, CatalogError> {
    let mut product = get(tx, id)?;
    if product.price_cents == price.get() {
        return Ok(product);
    }
    product.price_cents = price.get();
    product.version += 1;
    tx.execute(
        "UPDATE product SET price_cents = $2, version = $3 WHERE id = $1",
        &[id.as_str().into(), product.price_cents.into(), product.version.into()],
    )?;
    outbox.append(tx, vec![events::event(events::PRODUCT_PRICE_CHANGED, &product)])?;
    Ok(product)
}

/// Renames a product. The same name again changes nothing and publishes nothing.
pub fn rename(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    id: &ProductId,
    name: ProductName,
) -> Result<Product, CatalogError> {
    let mut product = get(tx, id)?;
    if product.name == name.as_str() {
        return Ok(product);
    }
    product.name = name.as_str().to_owned();
    product.version += 1;
    tx.execute(
        "UPDATE product SET name = $2, version = $3 WHERE id = $1",
        &[id.as_str().into(), (&product.name).into(), product.version.into()],
    )?;
    outbox.append(tx, vec![events::event(events::PRODUCT_RENAMED, &product)])?;
    Ok(product)
}

/// Prices `basket` at the current prices and counts each line towards its product's
/// popularity. Refuses the whole quote, naming every unknown product, when any is unknown.
pub fn quote(tx: &mut Tx<'_>, basket: &Basket) -> Result<Quote, CatalogError> {
    let mut lines = Vec::with_capacity(basket.lines().len());
    let mut unknown = Vec::new();
    for (id, quantity) in basket.lines() {
        match find(tx, id.as_str())? {
            Some(product) => lines.push(QuoteLine {
                product_id: product.id,
                name: product.name,
                quantity: quantity.get(),
                unit_price_cents: product.price_cents,
                // At most 1,000,000.00 × 1000 × 500 lines: far inside u64.
                line_cents: product.price_cents * u64::from(quantity.get()),
            }),
            None => unknown.push(id.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(CatalogError::UnknownProducts(unknown));
    }
    for line in &lines {
        tx.execute(
            "UPDATE product SET popularity = popularity + 1 WHERE id = $1",
            &[line.product_id.as_str().into()],
        )?;
    }
    let total_cents = lines.iter().map(|l| l.line_cents).sum();
    Ok(Quote { lines, total_cents })
}
