// The shopper's orders and where each stands as it moves: every order that can still
// change is read again about once a second (its shipment first, then the order, so the
// page never shows an order older than its shipment) until it is shipped, rejected or
// cancelled.
const known = new Map(); // order id -> { order, shipment, words }
let polling = null;

/// The order's shipment, null while there is none; while shipping cannot answer, the one
/// last seen (the order's own status still shows, shipping's part catches up later).
async function shipmentOf(id) {
  try {
    return (await api("GET", `shipping/shipments/${id}`)).data;
  } catch (e) {
    if (e.status === 404) return null;
    return known.has(id) ? known.get(id).shipment : null;
  }
}

async function readOrder(id) {
  const shipment = await shipmentOf(id);
  const order = (await api("GET", `order/orders/${id}`)).data;
  known.set(id, { order, shipment, words: orderWords(order, shipment) });
}

function orderRow(id, { order, words }) {
  const row = document.createElement("li");
  row.dataset.order = id;
  const what = document.createElement("span");
  const lines = order.lines.map((l) => `${l.quantity} × ${l.name || l.product_id}`).join(", ");
  what.textContent = `${lines} · ${euros(order.total_cents)} · to ${order.address.city}` +
    (order.address_source === "override" ? " (shipped elsewhere)" : "");
  const status = document.createElement("span");
  status.className = `status${words.bad ? " bad" : words.final ? " good" : ""}`;
  status.textContent = words.text;
  row.append(what, status);
  if (words.confirmable) {
    const confirm = document.createElement("button");
    confirm.type = "button";
    confirm.dataset.confirm = id;
    confirm.textContent = "Ship it to this order's address";
    row.append(confirm);
  }
  return row;
}

// What the list shows now: it is redrawn only when that changes, so following the orders
// does not take the keyboard focus off a button in it.
let shownOrders = null;

function showOrders() {
  const ids = [...known.keys()].sort().reverse(); // ids grow with time: newest first
  const key = JSON.stringify(ids.map((id) => [id, known.get(id).order.version, known.get(id).words]));
  if (key === shownOrders) return;
  shownOrders = key;
  const rows = ids.map((id) => orderRow(id, known.get(id)));
  if (rows.length === 0) {
    const none = document.createElement("li");
    none.textContent = "no orders yet";
    rows.push(none);
  }
  $("orders").replaceChildren(...rows);
}

async function pollOrders() {
  polling = null;
  if (!session) return;
  const open = [...known.values()].filter((k) => !k.words.final).map((k) => k.order.id);
  try {
    await Promise.all(open.map(readOrder));
    showOrders();
  } catch (e) {
    say(e.message, true);
  }
  if ([...known.values()].some((k) => !k.words.final)) polling = setTimeout(pollOrders, 1000);
}

function followOrders() {
  if (polling === null) polling = setTimeout(pollOrders, 0);
}

/// Reads the signed-in customer's orders (their newest 100) and follows the open ones.
async function loadOrders() {
  const { data } = await api("GET", `order/orders?customer_id=${customer()}`);
  known.clear();
  await Promise.all(data.map((o) => readOrder(o.id)));
  showOrders();
  followOrders();
}

/// Follows an order just placed.
function trackOrder(order) {
  known.set(order.id, { order, shipment: null, words: orderWords(order, null) });
  showOrders();
  followOrders();
}

function forgetOrders() {
  known.clear();
  shownOrders = null;
  if (polling !== null) clearTimeout(polling);
  polling = null;
  $("orders").replaceChildren();
}

$("orders").addEventListener("click", async (event) => {
  const id = event.target.dataset.confirm;
  if (!id) return;
  event.target.disabled = true;
  try {
    const { data } = await api("POST", `order/orders/${id}/confirm-address`);
    trackOrder(data);
    say("address confirmed: the order ships to its own address");
  } catch (e) {
    event.target.disabled = false;
    say(e.message, true);
  }
});
