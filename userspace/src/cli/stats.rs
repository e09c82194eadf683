//! `eipctl stats`

use super::output::{self, Output};
use crate::{
    api::StatsView,
    client::{CallError, Client},
};

pub fn run(client: &Client, output: Output) -> Result<(), CallError> {
    let stats: StatsView = client.get("/v1/stats")?;
    match output {
        Output::Json => output::json(&stats),
        Output::Table => {
            let rows: Vec<Vec<String>> =
                stats.verdicts.iter().map(|(name, n)| vec![name.clone(), n.to_string()]).collect();
            output::table(&["VERDICT", "FRAMES"], &rows);
        }
    }
    Ok(())
}
