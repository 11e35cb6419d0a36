//! `docs/architecture.md`'s crate table says which workspace crates each crate depends on.
//! This checks it against `cargo metadata`, so the table cannot drift from the manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The short name the table uses: `switchboard-auth` → `auth`; the server is `switchboard`.
fn short(name: &str) -> String {
    name.strip_prefix("switchboard-")
        .unwrap_or(name)
        .to_string()
}

/// Crate → workspace crates it depends on (normal dependencies), for the crates under `crates/`.
fn from_metadata(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = m["packages"].as_array().unwrap();
    let names: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let crates_dir = root.join("crates");
    packages
        .iter()
        .filter(|p| Path::new(p["manifest_path"].as_str().unwrap()).starts_with(&crates_dir))
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap())
                .filter(|n| names.contains(n))
                .map(short)
                .collect();
            (short(p["name"].as_str().unwrap()), deps)
        })
        .collect()
}

/// The same map, read from the table under `## Crates` in docs/architecture.md.
fn from_doc(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let section = doc
        .split("## Crates")
        .nth(1)
        .expect("a ## Crates section")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let name = cells[0].trim_start_matches('`');
            let name = &name[..name.find('`').unwrap()];
            let deps = cells
                .last()
                .unwrap()
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty() && *d != "—")
                .map(str::to_string)
                .collect();
            (short(name), deps)
        })
        .collect()
}

#[test]
fn crate_table_matches_the_manifests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap();
    let actual = from_metadata(&root);
    let documented = from_doc(&root);
    assert!(actual.len() >= 8, "{actual:?}");
    assert_eq!(
        documented, actual,
        "docs/architecture.md's crate table (left) differs from the manifests (right)"
    );
}
