//! The CLI subcommands that query a running agent.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use netkit_api::{Request, Response};

use super::ClientArgs;

fn ask(args: &ClientArgs, request: Request) -> anyhow::Result<Response> {
    netkit_api::call(&args.socket, &request, netkit_api::DEFAULT_TIMEOUT)
        .with_context(|| format!("asking the agent at {}", args.socket.display()))
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn status(args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let Response::Status(status) = ask(args, Request::Status)? else {
        bail!("the agent answered Status with something else");
    };
    if args.json {
        print_json(&status)?;
    } else {
        println!("ready:      {}", status.ready);
        println!("version:    {}", status.version);
        println!("endpoints:  {}", status.endpoints);
        if status.releasing > 0 {
            println!(
                "releasing:  {} (deleted, teardown under way)",
                status.releasing
            );
        }
        println!("addresses:  {} in the datapath", status.mapped_addresses);
        println!("pod CIDRs:  {}", status.pod_cidrs.join(", "));
        println!("uplink:     {}", status.uplink.as_deref().unwrap_or("-"));
        println!("translated: {}", status.translation_check);
        if let Some(nodes) = &status.nodes {
            println!("nodes:      {nodes}");
        }
        println!(
            "remote:     {} pod CIDRs routed on the fast path",
            status.remote_routes
        );
        if let Some(reason) = &status.reason {
            println!("reason:     {reason}");
        }
    }
    Ok(if status.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn endpoints(args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let Response::Endpoints { endpoints } = ask(args, Request::ListEndpoints)? else {
        bail!("the agent answered ListEndpoints with something else");
    };
    if args.json {
        print_json(&endpoints)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<8} {:<32} {:>7} {:<6} PROGRAMS",
        "CONTAINER", "IFNAME", "IPS", "IFINDEX", "MODE"
    );
    for e in endpoints {
        let ips: Vec<&str> = e.ips.iter().map(|ip| ip.address.as_str()).collect();
        let container: String = e.id.container_id.chars().take(24).collect();
        println!(
            "{:<24} {:<8} {:<32} {:>7} {:<6} {}",
            container,
            e.id.ifname,
            ips.join(","),
            e.host_ifindex,
            e.mode.as_str(),
            e.programs.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stats(args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let Response::Stats { counters } = ask(args, Request::Stats)? else {
        bail!("the agent answered Stats with something else");
    };
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> = counters
            .into_iter()
            .map(|c| (c.name, c.value.into()))
            .collect();
        print_json(&map)?;
    } else {
        for c in counters {
            println!("{:<16} {}", c.name, c.value);
        }
    }
    Ok(ExitCode::SUCCESS)
}
