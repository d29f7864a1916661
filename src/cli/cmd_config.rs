//! `urbdadm dump`: the normalized configuration, as `drbdadm dump` prints it.

use crate::config::{DumpOptions, dump_with};

use super::context::Context;
use super::error::CliError;
use super::output::print;

/// `urbdadm dump [RES...|all]`.
pub fn dump(ctx: &Context, names: &[String]) -> Result<(), CliError> {
    let opts = DumpOptions {
        node: Some(ctx.node.clone()),
        expand: false,
    };
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return print(&dump_with(&ctx.config, None, &opts)?);
    }
    // All names are checked before anything is printed.
    let mut text = String::new();
    for name in names {
        text.push_str(&dump_with(&ctx.config, Some(name), &opts)?);
    }
    print(&text)
}
