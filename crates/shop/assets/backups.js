// The dashboard's backups: take one (POST /admin/backups) and list those this shop took
// (GET /admin/backups). Uses dashboard.js's helpers ($, escape, token, authorized).

async function loadBackups() {
  if (!token()) { $("backups").textContent = "Enter the admin token to take and list backups."; return; }
  let list;
  try {
    list = await authorized("/admin/backups");
  } catch (e) {
    $("backups").textContent = e.status === 501 || e.status === 404
      ? "Not available here: backups are built for the embedded shop (capshop up); see docs/BACKUP.md."
      : `backups: ${e.message}`;
    return;
  }
  const html = list.length
    ? `<table><thead><tr><th scope="col">directory</th><th scope="col">kind</th><th scope="col">taken</th>` +
      `<th scope="col">consumers paused</th><th scope="col">took</th><th scope="col">size</th><th scope="col">certificate</th></tr></thead><tbody>` +
      list.slice().reverse().map((b) => `<tr><td><code>${escape(b.dir)}</code></td><td>${escape(b.kind)}</td>` +
        `<td>${escape(b.created_at)}</td><td>${b.pause_ms.toFixed(1)} ms</td><td>${Math.round(b.total_ms)} ms</td>` +
        `<td>${(b.bytes / 1e6).toFixed(1)} MB</td><td class="${b.certified ? "" : "bad"}">${b.certified ? "passed" : "failed"}</td></tr>`).join("") +
      "</tbody></table>"
    : "<p>No backup taken by this shop yet.</p>";
  if ($("backups").dataset.html !== html) { $("backups").innerHTML = html; $("backups").dataset.html = html; }
}

$("backup-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const dir = $("backup-dir").value.trim();
  $("message").textContent = `taking a ${$("backup-kind").value} backup into ${dir} ...`;
  try {
    const manifest = await authorized("/admin/backups", "POST", { dir, kind: $("backup-kind").value });
    $("message").textContent = `backup in ${dir}: ${manifest.files.length} databases, consumers paused ${manifest.pause_ms.toFixed(1)} ms`;
    $("backup-dir").value = suggestedBackupDir();
  } catch (e) { $("message").textContent = `backup: ${e.message}`; }
  await loadBackups();
});

function suggestedBackupDir() {
  return `/tmp/capshop-backup-${new Date().toISOString().replace(/[:.]/g, "-")}`;
}
$("backup-dir").value = suggestedBackupDir();
