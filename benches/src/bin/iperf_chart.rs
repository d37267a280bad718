//! `iperf-chart RESULTS.json OUT.svg`: the iperf bench's results as an SVG chart
//! (`weft_benches::chart`); `benches/iperf/run.sh` runs it after every run.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        eprintln!("usage: iperf-chart RESULTS.json OUT.svg");
        std::process::exit(2);
    };
    let run = || -> Result<(), String> {
        let text = std::fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{input}: {e}"))?;
        let svg = weft_benches::chart::render(&v)?;
        std::fs::write(output, svg).map_err(|e| format!("{output}: {e}"))
    };
    if let Err(e) = run() {
        eprintln!("iperf-chart: {e}");
        std::process::exit(1);
    }
}
