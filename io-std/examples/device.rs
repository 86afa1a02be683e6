//! What a device vendor writes to put the blocking std terminal inside a
//! program of its own (no async runtime): register as a name, allow one
//! peer, receive one file with progress, exit once it is stored and its
//! SHA-256 matched.
//!
//! ```sh
//! cargo run -p tryst-std --example device -- \
//!     NAME SERVER_ADDR TRIGGER_ADDR SERVER_KEY STATE_DIR ALLOWED_PEER RECV_DIR
//! ```
//!
//! The key is made (mode 0600) in STATE_DIR on the first run and kept;
//! SERVER_KEY is the server's public key in hex, or its `server.pub` file.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use tryst_std::cli::terminal::StateDir;
use tryst_std::core::terminal::{TerminalConfig, TerminalEvent};
use tryst_std::driver::terminal::spawn_with;
use tryst_std::keyfile::read_public_key;
use tryst_std::role::terminal::{Event, TerminalOptions};
use tryst_std::transfer::check_recv_dir;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, server, trigger, server_key, state, allow, recv_dir] = args.as_slice() else {
        return Err("usage: device NAME SERVER TRIGGER SERVER_KEY STATE_DIR ALLOW RECV_DIR".into());
    };
    let keypair = StateDir::open(state.as_ref())?.keypair()?;
    check_recv_dir(recv_dir.as_ref())?; // created if missing, writable, ours
    let config = TerminalConfig::new(name, trigger.parse()?, read_public_key(server_key)?)?;
    let options = TerminalOptions {
        recv_dir: Some(PathBuf::from(recv_dir)),
        ..TerminalOptions::default()
    };
    let any_port = "0.0.0.0:0".parse()?;
    let (terminal, events) = spawn_with(
        config,
        keypair,
        server.parse()?,
        any_port,
        &[allow],
        options,
    )?;
    for event in events.iter() {
        match event {
            Event::Terminal(TerminalEvent::Online { observed }) => {
                println!("online as {name}, seen at {observed}; {allow} may send");
            }
            Event::Receiving {
                name, done, size, ..
            } => {
                println!("receiving {name}: {done} of {size} bytes");
            }
            Event::Received {
                outcome: Ok(file), ..
            } => {
                println!(
                    "stored {} ({} bytes, SHA-256 verified)",
                    file.path.display(),
                    file.size
                );
                // Tells the sender (the session's end) before the program exits.
                terminal.shutdown(Duration::from_secs(2)).wait()?;
                return Ok(());
            }
            Event::Received {
                outcome: Err(why), ..
            } => println!("not stored: {why}"),
            _ => {}
        }
    }
    Err("the terminal stopped".into())
}
