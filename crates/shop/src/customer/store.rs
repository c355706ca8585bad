//! The customer service's SQL. Every write appends its event to the outbox in the same
//! transaction.

use kit::outbox::Outbox;
use kit::store::{Row, StoreError, Tx};

use super::events;
use super::model::{Address, Customer, CustomerError, CustomerId, PasswordHash, PaymentMethod, Registration};
use crate::contracts::session::{SessionRevoked, SigningKey};
use crate::service::session::paseto;

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

/// Up to `limit` customers after the id `after`, by id.
pub fn list(tx: &mut Tx<'_>, after: Option<&str>, limit: u32) -> Result<Vec<Customer>, CustomerError> {
    let rows = tx.query(
        &format!("SELECT {COLUMNS} FROM customer WHERE id > $1 ORDER BY id LIMIT $2"),
        &[after.unwrap_or("").into(), limit.into()],
    )?;
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
        &format!("INSERT INTO customer ({COLUMNS}, password_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
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
            new.password_hash.0.as_str().into(),
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

/// The customer of `email` and their password hash (none until a password is set).
pub fn credentials(
    tx: &mut Tx<'_>,
    email: &str,
) -> Result<Option<(CustomerId, Option<PasswordHash>)>, CustomerError> {
    let Some(mut row) =
        tx.query_opt("SELECT id, password_hash FROM customer WHERE email = $1", &[email.into()])?
    else {
        return Ok(None);
    };
    let id: String = row.take(0)?;
    let hash: Option<String> = row.take(1)?;
    let id = CustomerId::parse(&id).map_err(|e| StoreError::Database(e.to_string()))?;
    Ok(Some((id, hash.map(PasswordHash))))
}

/// The password hash of customer `id`.
pub fn password_hash(tx: &mut Tx<'_>, id: &CustomerId) -> Result<Option<PasswordHash>, CustomerError> {
    let row = tx.query_opt("SELECT password_hash FROM customer WHERE id = $1", &[id.as_str().into()])?;
    let mut row = row.ok_or_else(|| CustomerError::NotFound(id.to_string()))?;
    Ok(row.take::<Option<String>>(0)?.map(PasswordHash))
}

/// Sets the password of the customers `ids` that have none (the seed's, in a data dir from
/// before sign-in); a customer with a password keeps it.
pub fn set_missing_password(tx: &mut Tx<'_>, ids: &[&str], hash: &PasswordHash) -> Result<(), StoreError> {
    for id in ids {
        tx.execute(
            "UPDATE customer SET password_hash = $2 WHERE id = $1 AND password_hash IS NULL",
            &[(*id).into(), hash.0.as_str().into()],
        )?;
    }
    Ok(())
}

/// Changes the password of `id` and ends every open session of it (each by its event).
pub fn change_password(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    id: &CustomerId,
    hash: &PasswordHash,
    now_ms: u64,
) -> Result<Vec<SessionRevoked>, CustomerError> {
    tx.execute(
        "UPDATE customer SET password_hash = $2 WHERE id = $1",
        &[id.as_str().into(), hash.0.as_str().into()],
    )?;
    let open = tx.query(
        "SELECT id FROM customer_session WHERE customer_id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2",
        &[id.as_str().into(), now_ms.into()],
    )?;
    let mut ended = Vec::with_capacity(open.len());
    for mut row in open {
        let session: String = row.take(0)?;
        ended.extend(end_session(tx, outbox, &session, now_ms)?);
    }
    Ok(ended)
}

/// The key sessions are signed with: created, and its public half published, on first use.
pub fn signing_key(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    now_ms: u64,
) -> Result<(String, ed25519_dalek::SigningKey), CustomerError> {
    let row =
        tx.query_opt("SELECT kid, secret FROM signing_key ORDER BY created_at_ms DESC, kid LIMIT 1", &[])?;
    if let Some(mut row) = row {
        let kid: String = row.take(0)?;
        let secret: String = row.take(1)?;
        let key = paseto::decode_secret(&secret)
            .ok_or_else(|| StoreError::Database(format!("the signing key {kid} is not one")))?;
        return Ok((kid, key));
    }
    let kid = format!("k-{}", uuid::Uuid::now_v7().simple());
    let key = paseto::generate_key();
    tx.execute(
        "INSERT INTO signing_key (kid, secret, created_at_ms) VALUES ($1, $2, $3)",
        &[kid.as_str().into(), paseto::encode_key(&key.to_bytes()).as_str().into(), now_ms.into()],
    )?;
    let public =
        SigningKey { kid: kid.clone(), public_key: paseto::encode_key(key.verifying_key().as_bytes()) };
    outbox.append(tx, vec![crate::contracts::session::key_event(&public)])?;
    Ok((kid, key))
}

/// Records a session of `customer` that lasts until `expires_at_ms`.
pub fn open_session(
    tx: &mut Tx<'_>,
    session: &str,
    customer: &CustomerId,
    expires_at_ms: u64,
    now_ms: u64,
) -> Result<(), CustomerError> {
    // Sessions past their expiry need no record: their tokens are refused anyway.
    tx.execute("DELETE FROM customer_session WHERE expires_at_ms <= $1", &[now_ms.into()])?;
    tx.execute(
        "INSERT INTO customer_session (id, customer_id, expires_at_ms) VALUES ($1, $2, $3)",
        &[session.into(), customer.as_str().into(), expires_at_ms.into()],
    )?;
    Ok(())
}

/// Ends an open session and publishes its revocation; an ended one stays as it is.
pub fn end_session(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    session: &str,
    now_ms: u64,
) -> Result<Option<SessionRevoked>, CustomerError> {
    let row = tx.query_opt(
        "SELECT customer_id, expires_at_ms FROM customer_session WHERE id = $1 AND revoked_at_ms IS NULL",
        &[session.into()],
    )?;
    let Some(mut row) = row else { return Ok(None) };
    let revoked = SessionRevoked {
        session_id: session.to_owned(),
        customer_id: row.take(0)?,
        expires_at_ms: row.get(1)?,
    };
    tx.execute(
        "UPDATE customer_session SET revoked_at_ms = $2 WHERE id = $1",
        &[session.into(), now_ms.into()],
    )?;
    outbox.append(tx, vec![crate::contracts::session::revoked_event(&revoked)])?;
    Ok(Some(revoked))
}
