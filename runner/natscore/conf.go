package natscore

import (
	"regexp"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// Keys are the keys of a [core:NAME] section using egg:paster#nats that
// OptionsFromLocal reads, beside runner.CoreKeys.
var Keys = []string{"embedded", "listen", "store_dir", "cluster_listen", "routes", "cluster_name", "url", "name", "subject_prefix", "gather_timeout", "heartbeat", "replicas", "creds", "tls_ca", "tls_cert", "tls_key"}

var token = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// OptionsFromLocal reads Options from a core section:
//
//	url             NATS server URLs, comma-separated (required unless
//	                embedded; with embedded, the other nodes' servers)
//	embedded        true: start a nats-server inside this process
//	                (default false), with:
//	listen          its client host:port (default 127.0.0.1:4222; port 0:
//	                any free port)
//	store_dir       where its JetStream keeps topics (required)
//	cluster_listen  its cluster host:port, for the other nodes' servers
//	                (default: none, a server of its own)
//	routes          the other nodes' cluster URLs (nats://host:port, comma
//	                or space separated)
//	cluster_name    the NATS cluster's name (default paster)
//	name            this node's name (default hostname:pid)
//	subject_prefix  prefix of every subject and stream (default paster;
//	                letters, digits, - and _; at most 183 bytes)
//	gather_timeout  how long Signal waits for other nodes (default 250ms)
//	heartbeat       how often a node says it is alive (default 1s)
//	replicas        JetStream replicas of each topic (default 1)
//	creds           NATS credentials file
//	tls_ca          CA file to verify the NATS servers
//	tls_cert        client certificate file (with tls_key)
//	tls_key         client key file (with tls_cert)
//
// and the Core's keys (runner.CoreKeys: sched_default_timeout,
// pubsub_retain_count, pubsub_retain_age, core_max_value,
// pubsub_retain_bytes; pubsub_retain_total_bytes is accepted and not used)
// as runner.CoreOptionsFromLocal does, except that core_max_value may be
// at most 16m (MaxValueLimit), and when it is not set Options.Core.MaxValue
// is 0: the largest value is then what the NATS server's max_payload
// carries, at most 1m (see Options.Core). A bad value, or a key not listed
// here, is an error naming the file, line, section and key.
func OptionsFromLocal(local entrypoints.Local) (Options, error) {
	var o Options
	var err error
	if err := runner.UnknownKey(local, "a NATS core", append(append([]string(nil), Keys...), runner.CoreKeys...)); err != nil {
		return Options{}, err
	}
	if o.Core, err = runner.CoreOptionsFromLocal(local); err != nil {
		return Options{}, err
	}
	if _, set := local.Lookup("core_max_value"); !set {
		o.Core.MaxValue = 0 // what the NATS server carries, at most the default: see Options.Core
	} else if err := maxValueError(o.Core.MaxValue); err != nil {
		return Options{}, local.Errorf("core_max_value", "%w", err)
	}
	embedded, err := local.Bool("embedded", false)
	if err != nil {
		return Options{}, err
	}
	url, _ := local.Lookup("url")
	if strings.TrimSpace(url) == "" && !embedded {
		return Options{}, local.Errorf("url", "url is required (or embedded = true): the NATS server(s) to join, e.g. nats://127.0.0.1:4222")
	}
	if embedded {
		e := &Embedded{
			Listen: local.Get("listen"), StoreDir: local.Get("store_dir"), ClusterListen: local.Get("cluster_listen"),
			Routes: local.List("routes"), ClusterName: local.Get("cluster_name"),
		}
		if e.StoreDir == "" {
			return Options{}, local.Errorf("store_dir", "store_dir is required with embedded = true: where JetStream keeps the topics")
		}
		for _, k := range []string{"listen", "cluster_listen"} {
			if v := local.Get(k); v != "" {
				if _, _, err := splitHostPort(v, "", 0); err != nil {
					return Options{}, local.Errorf(k, "%s %q: want host:port: %v", k, v, err)
				}
			}
		}
		if len(e.Routes) > 0 && e.ClusterListen == "" {
			return Options{}, local.Errorf("routes", "routes need cluster_listen: the other nodes' servers connect there")
		}
		o.Embedded = e
	}
	o.URL = url
	o.Name = local.Get("name")
	if p, ok := local.Lookup("subject_prefix"); ok {
		if !token.MatchString(p) {
			return Options{}, local.Errorf("subject_prefix", "subject_prefix %q: use letters, digits, - and _ only", p)
		}
		if err := prefixError(p); err != nil {
			return Options{}, local.Errorf("subject_prefix", "%w", err)
		}
		o.SubjectPrefix = p
	}
	if o.GatherTimeout, err = local.Duration("gather_timeout", DefaultGatherTimeout); err != nil {
		return Options{}, err
	}
	if o.Heartbeat, err = local.Duration("heartbeat", DefaultHeartbeat); err != nil {
		return Options{}, err
	}
	if o.Replicas, err = local.Int("replicas", 1); err != nil {
		return Options{}, err
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		return Options{}, local.Errorf("replicas", "replicas %d: JetStream keeps 1 to 5 copies", o.Replicas)
	}
	if f := local.Get("creds"); f != "" {
		o.NATS = append(o.NATS, nats.UserCredentials(f))
	}
	if f := local.Get("tls_ca"); f != "" {
		o.NATS = append(o.NATS, nats.RootCAs(f))
	}
	cert, key := local.Get("tls_cert"), local.Get("tls_key")
	switch {
	case cert != "" && key != "":
		o.NATS = append(o.NATS, nats.ClientCert(cert, key))
	case cert != "":
		return Options{}, local.Errorf("tls_cert", "tls_cert needs tls_key")
	case key != "":
		return Options{}, local.Errorf("tls_key", "tls_key needs tls_cert")
	}
	return o, nil
}
