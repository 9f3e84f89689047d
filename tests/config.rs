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
    setup(dir.path(), "[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"ironlake/x/y\" }\n");
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

    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"profinet\", topic = \"x\" }\n");
    assert!(e.contains("p.toml") && e.contains("profinet"), "{e}");

    // OPC UA: a key of another protocol, a server that is not configured,
    // a twin type without OPC UA bindings, a NodeId that cannot be one.
    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"opcua\", topic = \"x\" }\n");
    assert!(
        e.contains("machines[0].source") && e.contains("topic") && e.contains("server"),
        "{e}"
    );
    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"opcua\", server = \"cell-9\" }\n");
    assert!(
        e.contains("machines[0].source.server") && e.contains("cell-9"),
        "{e}"
    );
    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"opcua\", endpoint = \"opc.tcp://h:4840\" }\n");
    assert!(
        e.contains("no signal of twin type `press` has an OPC UA binding"),
        "{e}"
    );
    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"opcua\", endpoint = \"opc.tcp://h:4840\", nodes = { force = \"ns=x;s=F\" } }\n");
    assert!(
        e.contains("machines[0].source.nodes.force") && e.contains("not a number"),
        "{e}"
    );
    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"opcua\", endpoint = \"http://h\", nodes = { force = \"ns=2;s=F\" } }\n");
    assert!(e.contains("opc.tcp://"), "{e}");

    // A topic no subscription covers would never receive anything.
    let e = err("[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"plant/press\" }\n");
    assert!(
        e.contains("machines[0].source.topic")
            && e.contains("plant/press")
            && e.contains("mqtt.subscribe"),
        "{e}"
    );

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
    let m = "[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"ironlake/x/y\" }\n";
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
    let shifts = "[[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"ironlake/x/y\" }\n[[shifts]]\nname = \"day\"\nstart = \"25:00\"\n";
    let e = err(shifts);
    assert!(e.contains("shifts[0].start") && e.contains("25:00"), "{e}");
    let dup =
        shifts.replace("25:00", "06:00") + "[[shifts]]\nname = \"again\"\nstart = \"06:00\"\n";
    assert!(err(&dup).contains("shifts[1].start"));
}

#[test]
fn a_platform_file_needs_only_what_differs() {
    // One key per section; everything else is the built-in default.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ironlake.toml",
        "plants = [\"p.toml\"]\n[http]\nlisten = \"127.0.0.1:9090\"\n[lake]\nroot = \"/tmp/lk\"\n\
         [twin]\nmailbox = 32\n[ingest]\nshards = 3\n[sql]\nmax_concurrent = 2\n\
         [pipelines]\nlookback_h = 12\n[mqtt]\nport = 1884\n[mqtt.embedded]\nenabled = false\n",
    );
    write(
        dir.path(),
        "p.toml",
        "[plant]\nid = \"p\"\n[[areas]]\nid = \"a\"\n[[lines]]\nid = \"l\"\narea = \"a\"\n\
         [[machines]]\nid = \"m\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"ironlake/x/m\" }\n",
    );
    let c = Config::load(&dir.path().join("ironlake.toml")).unwrap();
    let d = ironlake::config::PlatformFile::embedded_default().unwrap();
    let p = &c.platform;
    assert_eq!(p.http.listen.port(), 9090);
    assert_eq!(
        (p.lake.root.as_str(), p.lake.flush_rows),
        ("/tmp/lk", d.lake.flush_rows)
    );
    assert_eq!((p.twin.mailbox, p.twin.arbiters), (32, d.twin.arbiters));
    assert_eq!((p.ingest.shards, p.ingest.queue), (3, d.ingest.queue));
    assert_eq!(
        (p.sql.max_concurrent, p.sql.memory_mb),
        (2, d.sql.memory_mb)
    );
    assert_eq!(
        (p.pipelines.lookback_h, p.pipelines.interval_s),
        (12, d.pipelines.interval_s)
    );
    let m = ironlake::connectors::mqtt::MqttConfig::from_platform(p).unwrap();
    assert_eq!((m.port, m.host.as_str()), (1884, "127.0.0.1"));
    assert!(!m.embedded.unwrap().enabled);
    // Twin types and pipelines left out: the built-in ones.
    assert!(c.model.twin_types.contains_key("cnc_mill"));
    assert_eq!(
        c.pipelines.len(),
        Config::embedded().unwrap().pipelines.len()
    );
}

#[test]
fn protocol_keys_are_checked_by_their_connector() {
    // A misspelt binding in a twin type.
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "");
    let p = dir.path().join("twins/press.toml");
    let text = fs::read_to_string(&p)
        .unwrap()
        .replacen("mqtt = {", "mqtt_ = {", 1);
    fs::write(&p, text).unwrap();
    let e = Config::load(&dir.path().join("config/ironlake.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("press.toml") && e.contains("signals[0].mqtt_") && e.contains("modbus, mqtt"),
        "{e}"
    );
    // A coil that claims to be a 16-bit register.
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "");
    let p = dir.path().join("twins/press.toml");
    let text =
        fs::read_to_string(&p)
            .unwrap()
            .replacen("table = \"holding\"", "table = \"coil\"", 1);
    fs::write(&p, text).unwrap();
    let e = Config::load(&dir.path().join("config/ironlake.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("press.toml") && e.contains(".modbus") && e.contains("bool"),
        "{e}"
    );
    // An unknown section of the platform file.
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "");
    let p = dir.path().join("config/ironlake.toml");
    let text = fs::read_to_string(&p).unwrap() + "\n[mqtt_broker]\nport = 1\n";
    fs::write(&p, text).unwrap();
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("mqtt_broker") && e.contains("connector sections"),
        "{e}"
    );
}
