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
var Keys = []string{"url", "name", "subject_prefix", "gather_timeout", "heartbeat", "replicas", "creds", "tls_ca", "tls_cert", "tls_key"}

var token = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// OptionsFromLocal reads Options from a core section:
//
//	url             NATS server URLs, comma-separated (required)
//	name            this node's name (default hostname:pid)
//	subject_prefix  prefix of every subject and stream (default paster;
//	                letters, digits, - and _)
//	gather_timeout  how long Signal waits for other nodes (default 250ms)
//	heartbeat       how often a node says it is alive (default 1s)
//	replicas        JetStream replicas of each topic (default 1)
//	creds           NATS credentials file
//	tls_ca          CA file to verify the NATS servers
//	tls_cert        client certificate file (with tls_key)
//	tls_key         client key file (with tls_cert)
//
// and sched_default_timeout, pubsub_retain_count and pubsub_retain_age as
// runner.CoreOptionsFromLocal does. A bad value is an error naming the file,
// line, section and key.
func OptionsFromLocal(local entrypoints.Local) (Options, error) {
	var o Options
	var err error
	if o.Core, err = runner.CoreOptionsFromLocal(local); err != nil {
		return Options{}, err
	}
	url, _ := local.Lookup("url")
	if strings.TrimSpace(url) == "" {
		return Options{}, local.Errorf("url", "url is required: the NATS server(s) to join, e.g. nats://127.0.0.1:4222")
	}
	o.URL = url
	o.Name = local.Get("name")
	if p, ok := local.Lookup("subject_prefix"); ok {
		if !token.MatchString(p) {
			return Options{}, local.Errorf("subject_prefix", "subject_prefix %q: use letters, digits, - and _ only", p)
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
