// What the shop's answers mean in a shopper's words: prices, addresses, how fresh the
// checkout's address is, the payment method, and where an order stands. No page access
// here: each function takes an answer and returns text.
const euros = (cents) => `€${(cents / 100).toFixed(2)}`;

const addressLine = (a) => (a ? `${a.line1}, ${a.postcode} ${a.city}, ${a.country}` : "unknown");

/// "3 s ago", "4 min ago", "2 h ago", "5 days ago" ("just now" under a second).
function ago(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 1) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} days ago`;
}

/// Where the checkout's address came from (its `address_source`), in words.
function freshness(source) {
  const when = source.age_ms === null ? "" : ago(source.age_ms);
  switch (source.source) {
    case "replica": return `as of ${when} (the shop's copy of your profile)`;
    case "owner": return `as of ${when} (asked your profile just now)`;
    case "override": return "this order's own address";
    default: return "your address cannot be read right now";
  }
}

function paymentWords(method) {
  if (!method) return "unknown";
  if (method.kind === "card") return `card ending in ${method.last4}`;
  if (method.kind === "invoice") return "invoice";
  return method.kind;
}

/// One reason shipping gives for holding a shipment (its reasons are joined by "; ").
function holdWords(reason) {
  const differs = reason.match(/^the order's address differs from the customer's current address \((.*) vs (.*)\)$/);
  if (differs) {
    return `the address could not be confirmed: this order goes to ${differs[1]}, ` +
      `your profile says ${differs[2]}`;
  }
  if (reason.startsWith("the customer's address is not known yet")) {
    return "the address could not be confirmed yet: shipping has not heard of your profile";
  }
  if (reason === "waiting for payment") return "waiting for the payment to be confirmed";
  return reason;
}

/// Where an order stands, from the order and its shipment (if any): the words to show,
/// whether the order can still change (else it is not polled again), and whether it waits
/// only for the shopper to confirm its address.
function orderWords(order, shipment) {
  const why = order.reason ? `: ${order.reason}` : "";
  switch (order.status) {
    case "pending_stock": return { text: "waiting for stock", final: false };
    case "rejected": return { text: `rejected, out of stock${why}`, final: true, bad: true };
    case "cancelled": return { text: `cancelled${why}`, final: true, bad: true };
  }
  if (!shipment) return { text: "confirmed, waiting for shipping", final: false };
  if (shipment.status === "shipped") return { text: "shipped", final: true };
  const reasons = (shipment.reason || "").split("; ").filter(Boolean);
  const address = reasons.some((r) => r.startsWith("the order's address differs"));
  return {
    text: `held: ${reasons.map(holdWords).join("; ") || "waiting"}`,
    final: false,
    bad: true,
    confirmable: address && !order.address_confirmed,
  };
}
