//! The customer service's SQL. Every write appends its event to the outbox in the same
//! transaction.

use kit::outbox::Outbox;
use kit::store::{Row, StoreError, Tx};

use super::events;
use super::model::{Address, Customer, CustomerError, CustomerId, PaymentMethod, Registration};

const COLUMNS: &str = "id, name, email, line1, city, postcode, country, payment_kind, payment_last4, version";

fn customer_from_row(mut row: Row) -> Result<Customer, StoreError> {
    let id: String = row.take(0)?;
    Ok(Customer {
        id: CustomerId::parse(&id).map_err(|e| StoreError::Database(e.to_string()))?,
        name: row.take(1)?,
        email: row.take(2)?,
        address: Address {
            line1: row.take(3)?,
            city: row.take(4)?,
            postcode: row.take(5)?,
            country: row.take(6)?,
        },
        payment_method: PaymentMethod::from_columns(&row.take::<String>(7)?, row.take(8)?),
        version: row.get(9)?,
    })
}

pub fn get(tx: &mut Tx<'_>, id: &CustomerId) -> Result<Customer, CustomerError> {
    let row =
        tx.query_opt(&format!("SELECT {COLUMNS} FROM customer WHERE id = $1"), &[id.as_str().into()])?;
    row.map(customer_from_row).transpose()?.ok_or_else(|| CustomerError::NotFound(id.to_string()))
}

pub fn list(tx: &mut Tx<'_>) -> Result<Vec<Customer>, CustomerError> {
    let rows = tx.query(&format!("SELECT {COLUMNS} FROM customer ORDER BY name, id"), &[])?;
    Ok(rows.into_iter().map(customer_from_row).collect::<Result<_, _>>()?)
}

pub fn count(tx: &mut Tx<'_>) -> Result<u64, StoreError> {
    tx.query_one("SELECT count(*) FROM customer", &[])?.get(0)
}

pub fn register(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    id: CustomerId,
    new: Registration,
) -> Result<Customer, CustomerError> {
    let taken = tx.query_opt("SELECT 1 FROM customer WHERE email = $1", &[new.email.as_str().into()])?;
    if taken.is_some() {
        return Err(CustomerError::EmailTaken(new.email));
    }
    let customer = Customer {
        id,
        name: new.name,
        email: new.email,
        address: new.address,
        payment_method: new.payment_method,
        version: 1,
    };
    let (kind, last4) = customer.payment_method.columns();
    let a = &customer.address;
    tx.execute(
        &format!("INSERT INTO customer ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
        &[
            customer.id.as_str().into(),
            customer.name.as_str().into(),
            customer.email.as_str().into(),
            a.line1.as_str().into(),
            a.city.as_str().into(),
            a.postcode.as_str().into(),
            a.country.as_str().into(),
            kind.into(),
            last4.into(),
            customer.version.into(),
        ],
    )?;
    outbox.append(tx, vec![events::event(events::REGISTERED, &customer)])?;
    Ok(customer)
}

pub fn change_address(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    id: &CustomerId,
    address: Address,
) -> Result<Customer, CustomerError> {
    let mut customer = get(tx, id)?;
    customer.address = address;
    customer.version += 1;
    let a = &customer.address;
    tx.execute(
        "UPDATE customer SET line1 = $2, city = $3, postcode = $4, country = $5, version = $6 WHERE id = $1",
        &[
            id.as_str().into(),
            a.line1.as_str().into(),
            a.city.as_str().into(),
            a.postcode.as_str().into(),
            a.country.as_str().into(),
            customer.version.into(),
        ],
    )?;
    outbox.append(tx, vec![events::event(events::ADDRESS_CHANGED, &customer)])?;
    Ok(customer)
}

pub fn change_payment_method(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    id: &CustomerId,
    method: PaymentMethod,
) -> Result<Customer, CustomerError> {
    let mut customer = get(tx, id)?;
    customer.payment_method = method;
    customer.version += 1;
    let (kind, last4) = customer.payment_method.columns();
    tx.execute(
        "UPDATE customer SET payment_kind = $2, payment_last4 = $3, version = $4 WHERE id = $1",
        &[id.as_str().into(), kind.into(), last4.into(), customer.version.into()],
    )?;
    outbox.append(tx, vec![events::event(events::PAYMENT_METHOD_CHANGED, &customer)])?;
    Ok(customer)
}
