use std::process::ExitCode;

use ccu::cli::{self, Cli, Command};
use ccu::config::Settings;
use clap::Parser;

fn main() -> ExitCode {
    let args = Cli::parse();
    // The planning tools need no server configuration (unless --queue).
    match args.command {
        Some(Command::Simulate(sim)) => {
            let settings = sim
                .queue
                .as_ref()
                .and_then(|_| Settings::load(args.config.as_deref()).ok());
            return print(cli::simulate(sim, settings.as_ref()));
        }
        Some(Command::Erlang(erlang)) => return print(cli::erlang(erlang)),
        _ => {}
    }
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("ccu: {err}");
            return ExitCode::from(2);
        }
    };
    ccu::telemetry::init(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ccu: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match args.command.unwrap_or(Command::Serve) {
            Command::Serve => cli::serve(settings).await,
            Command::Migrate => cli::migrate(settings).await,
            Command::User { action } => cli::user(settings, action).await,
            Command::Simulate(_) | Command::Erlang(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ccu: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn print(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ccu: {err:#}");
            ExitCode::FAILURE
        }
    }
}
