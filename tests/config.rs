//! A bad config stops start-up with a message naming the file and the key.

use std::fs;
use std::path::Path;

use ironlake::platform::Config;

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn setup(dir: &Path, machine: &str) {
    let platform = include_str!("../config/ironlake.toml").replace(
        "plants = [\"plants/plant-a.toml\", \"plants/plant-b.toml\"]",
        "plants = [\"plants/p.toml\"]",
    );
    write(dir, "config/ironlake.toml", &platform);
    for t in ["cnc_mill", "press", "conveyor", "compressor"] {
        let text = fs::read_to_string(format!("twins/{t}.toml")).unwrap();
        write(dir, &format!("twins/{t}.toml"), &text);
    }
    let plant = format!(
        "[plant]\nid = \"p\"\n[[areas]]\nid = \"a\"\n[[lines]]\nid = \"l\"\narea = \"a\"\n{machine}"
    );
    write(dir, "config/plants/p.toml", &plant);
}

fn err(machine: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), machine);
    match Config::load(&dir.path().join("config/ironlake.toml")) {
        Ok(_) => panic!("config should be rejected: {machine}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_shipped_configs_load() {
    let c = Config::load(Path::new("config/ironlake.toml")).unwrap();
    assert_eq!(c.model.plants.len(), 2);
    assert!(c.model.assets.len() >= 12);
    let e = Config::embedded().unwrap();
    assert_eq!(e.model.assets.len(), c.model.assets.len());
}

#[test]
fn a_good_machine_loads() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"x/y\" }\n");
    Config::load(&dir.path().join("config/ironlake.toml")).unwrap();
}

#[test]
fn errors_name_file_and_key() {
    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"robot\"\nsource = { protocol = \"mqtt\", topic = \"x\" }\n");
    assert!(
        e.contains("p.toml")
            && e.contains("machines[0].type")
            && e.contains("robot")
            && e.contains("cnc_mill"),
        "{e}"
    );

    let e = err("[[machines]]\nid = \"m\"\nline = \"nope\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"x\" }\n");
    assert!(e.contains("machines[0].line") && e.contains("nope"), "{e}");

    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"x/#\" }\n");
    assert!(e.contains("machines[0].source.topic"), "{e}");

    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"modbus\", host = \"h\", port = 502, registers = { force = { table = \"holding\", address = 1, type = \"u12\" } } }\n");
    assert!(e.contains("p.toml") && e.contains("u12"), "{e}");

    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"modbus\", host = \"h\", port = 502, registers = { torque = { table = \"holding\", address = 1, type = \"u16\" } } }\n");
    assert!(e.contains("machines[0].source.registers.torque"), "{e}");

    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"opcua\", topic = \"x\" }\n");
    assert!(e.contains("p.toml") && e.contains("opcua"), "{e}");

    let e = err("[[machines]]\nid = \"m m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"x\" }\n");
    assert!(e.contains("machines[0].id"), "{e}");
}

#[test]
fn bad_twin_types_and_time_zones_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "");
    let p = dir.path().join("twins/press.toml");
    let text = fs::read_to_string(&p)
        .unwrap()
        .replace("signal = \"oil_temp\"", "signal = \"oil_temperature\"");
    fs::write(&p, text).unwrap();
    let e = Config::load(&dir.path().join("config/ironlake.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("press.toml") && e.contains("alarms[0].signal") && e.contains("oil_temperature"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "");
    let p = dir.path().join("config/plants/p.toml");
    let text = fs::read_to_string(&p)
        .unwrap()
        .replace("id = \"p\"", "id = \"p\"\ntimezone = \"Mars/Olympus\"");
    fs::write(&p, text).unwrap();
    let e = Config::load(&dir.path().join("config/ironlake.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("plant.timezone") && e.contains("Mars/Olympus"),
        "{e}"
    );

    let e = Config::load(Path::new("/nonexistent/ironlake.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/ironlake.toml"), "{e}");
}

#[test]
fn shipped_pipelines_load_and_bad_ones_are_refused() {
    let c = Config::load(Path::new("config/ironlake.toml")).unwrap();
    let names: Vec<_> = c.pipelines.iter().map(|p| p.name.as_str()).collect();
    for n in [
        "oee_shift",
        "energy_shift",
        "downtime",
        "reliability",
        "alarm_log",
    ] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert_eq!(
        Config::embedded().unwrap().pipelines.len(),
        c.pipelines.len()
    );

    // A condition that does not parse names the file and the key.
    let dir = tempfile::tempdir().unwrap();
    let m = "[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"x/y\" }\n";
    setup(dir.path(), m);
    write(
        dir.path(),
        "config/pipelines/bad.toml",
        "[pipeline]\nsource = \"silver.readings\"\ntarget = \"gold.x\"\nsql = \"SELECT * FROM source\"\n[[expectations]]\nname = \"e\"\ncondition = \"value >\"\n",
    );
    let e = Config::load(&dir.path().join("config/ironlake.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.toml") && e.contains("expectations[0].condition"),
        "{e}"
    );
    // Two pipelines writing one table.
    write(
        dir.path(),
        "config/pipelines/bad.toml",
        "[pipeline]\nkind = \"oee_shift\"\n",
    );
    write(
        dir.path(),
        "config/pipelines/bad2.toml",
        "[pipeline]\nkind = \"oee_shift\"\n",
    );
    let e = Config::load(&dir.path().join("config/ironlake.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("gold.oee_shift") && e.contains("unique"), "{e}");
}

#[test]
fn shift_calendars_are_validated() {
    let shifts = "[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"x/y\" }\n[[shifts]]\nname = \"day\"\nstart = \"25:00\"\n";
    let e = err(shifts);
    assert!(e.contains("shifts[0].start") && e.contains("25:00"), "{e}");
    let dup =
        shifts.replace("25:00", "06:00") + "[[shifts]]\nname = \"again\"\nstart = \"06:00\"\n";
    assert!(err(&dup).contains("shifts[1].start"));
}
