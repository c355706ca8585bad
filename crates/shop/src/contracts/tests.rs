//! The rule of [`super`]: a service names no other service, only contracts, `service`
//! and the kit.

use std::path::{Path, PathBuf};

const SERVICES: [&str; 7] = ["customer", "catalog", "inventory", "order", "payment", "shipping", "search"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a service folder reads") {
        let path = entry.expect("a folder entry reads").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Whether `line`, in a file of `service`, names another service.
fn names_another(service: &str, line: &str) -> bool {
    SERVICES.iter().filter(|&&other| other != service).any(|other| {
        [
            format!("crate::{other}::"),
            format!("crate::{other};"),
            format!("super::super::{other}"),
            format!("crate::{{{other}"),
        ]
        .iter()
        .any(|p| line.contains(p.as_str()))
    })
}

/// Every `file:line: text` in a service's folder that names another service.
fn offenders() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for service in SERVICES {
        let mut files = Vec::new();
        rust_files(&src.join(service), &mut files);
        assert!(files.len() >= 4, "{service} has its rooms: {files:?}");
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file reads");
            for (n, line) in text.lines().enumerate() {
                if names_another(service, line) {
                    let shown = file.strip_prefix(&src).unwrap_or(&file).display();
                    offenders.push(format!("{shown}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    offenders
}

#[test]
fn no_service_names_another_service_only_the_contracts() {
    let offenders = offenders();
    assert!(
        offenders.is_empty(),
        "services must depend on crate::contracts, not on each other:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_rule_flags_a_service_naming_another_but_not_itself_or_a_contract() {
    assert!(names_another("order", "use crate::customer::model::Customer;"));
    assert!(names_another("shipping", "use super::super::payment::events;"));
    assert!(!names_another("customer", "use crate::customer::model::Customer;"));
    assert!(!names_another("order", "use crate::contracts::customer::Customer;"));
}
