//! `tern certs init`: a development PKI for the QUIC transport (see
//! `tern_node::transport::certs`).
use anyhow::Context;
use tern_node::transport::certs::{CA_CERT_FILE, identity_paths, init_dev_pki};

use crate::cli::{CertsCommand, CertsInitArgs};

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init(args) => init(args),
    }
}

fn init(args: CertsInitArgs) -> anyhow::Result<()> {
    let summary = init_dev_pki(&args.out, &args.sites, args.nodes)
        .with_context(|| format!("writing a development PKI into {}", args.out.display()))?;
    let ca = summary.dir.join(CA_CERT_FILE);
    if summary.ca_reused {
        println!(
            "reused CA {} (certificates issued before stay valid)",
            ca.display()
        );
    } else {
        println!("wrote CA {} and its key", ca.display());
    }
    for identity in &summary.identities {
        let (cert, key) = identity_paths(&summary.dir, identity);
        println!("wrote {identity}: {} {}", cert.display(), key.display());
    }
    println!("development certificates only: use a real CA in production");
    Ok(())
}
