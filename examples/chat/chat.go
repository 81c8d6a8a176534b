// Package chat is a long-poll chat on the runner's publish/subscribe Core,
// after cogen's comet chat: post a message, poll for the ones after the last
// you saw. It also ships the seed's hijacked runner, which adds its startup
// coroutines to the scheduler in code before serving.
//
//	[server:main]
//	use = egg:chat#hijacked_runner   # the http runner plus a ticker coroutine
//	tick_interval = 30               # seconds between ticks (default 30)
//
//	[app:chat]
//	use = egg:chat#main
//	topic = chat          # pub/sub topic (default chat)
//	poll_timeout = 25     # seconds a poll waits for news (default 25)
//	idle = 60             # seconds before a silent nickname leaves the roster
//
// Endpoints, relative to where the app is mounted: GET / is a page that
// posts and polls; POST /post with form fields nick and text publishes and
// answers {"seq": N}; GET /poll?since=N waits for messages after N (since=now
// or absent: only new ones) and answers {"messages": [...], "next": N}, with
// "gap" set when messages were dropped before they were read; GET /who lists
// the nicknames seen within idle.
package chat

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// Dist is the chat distribution: the app main, the coroutine ticker and the
// server runner hijacked_runner.
var Dist = &entrypoints.Dist{
	Name:       "chat",
	Version:    "0.1.0",
	Apps:       map[string]entrypoints.AppFactory{"main": newApp},
	Coroutines: map[string]entrypoints.CoroutineFactory{"ticker": newTicker},
	Runners:    map[string]entrypoints.ServerRunner{"hijacked_runner": hijackedRunner},
}

//go:embed page.html
var page []byte

// Message is one chat message as published and as polled.
type Message struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	Nick string    `json:"nick"`
	Text string    `json:"text"`
}

// app is the chat application. It declares its own startup coroutine,
// "roster", which forgets nicknames that have been silent for longer than
// idle: the loader collects it and the runner starts it before serving.
type app struct {
	http.Handler
	topic       string
	pollTimeout time.Duration
	idle        time.Duration

	mu     sync.Mutex
	roster map[string]time.Time // nickname -> last post
}

func newApp(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
	a := &app{topic: local.Get("topic"), roster: map[string]time.Time{}}
	if a.topic == "" {
		a.topic = "chat"
	}
	var err error
	if a.pollTimeout, err = local.Duration("poll_timeout", 25*time.Second); err != nil {
		return nil, err
	}
	if a.idle, err = local.Duration("idle", time.Minute); err != nil {
		return nil, err
	}
	if a.pollTimeout <= 0 || a.idle <= 0 {
		return nil, errors.New("chat: poll_timeout and idle must be positive")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	mux.HandleFunc("POST /post", a.post)
	mux.HandleFunc("GET /poll", a.poll)
	mux.HandleFunc("GET /who", a.who)
	a.Handler = mux
	return a, nil
}

// Startup declares the app's own coroutine (entrypoints.StartupProvider).
func (a *app) Startup() map[string]entrypoints.Coroutine {
	return map[string]entrypoints.Coroutine{"roster": a.pruneRoster}
}

// pruneRoster forgets idle nicknames every idle/2 until ctx ends.
func (a *app) pruneRoster(ctx context.Context) error {
	runner.Ready(ctx)
	t := time.NewTicker(a.idle / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			a.mu.Lock()
			for nick, seen := range a.roster {
				if now.Sub(seen) > a.idle {
					delete(a.roster, nick)
				}
			}
			a.mu.Unlock()
		}
	}
}

func (a *app) post(w http.ResponseWriter, r *http.Request) {
	nick, text := strings.TrimSpace(r.FormValue("nick")), strings.TrimSpace(r.FormValue("text"))
	if nick == "" || text == "" {
		http.Error(w, "nick and text are required", http.StatusBadRequest)
		return
	}
	seq, err := publish(r.Context(), a.topic, Message{Time: time.Now().UTC(), Nick: nick, Text: text})
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	a.mu.Lock()
	a.roster[nick] = time.Now()
	a.mu.Unlock()
	writeJSON(w, map[string]uint64{"seq": seq})
}

// pollReply is what GET /poll answers.
type pollReply struct {
	Messages []Message `json:"messages"`
	Next     uint64    `json:"next"`          // pass as since= in the next poll
	Gap      string    `json:"gap,omitempty"` // messages lost before this poll read them
}

func (a *app) poll(w http.ResponseWriter, r *http.Request) {
	from := runner.FromNow
	var since uint64
	if s := r.FormValue("since"); s != "" && s != "now" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			http.Error(w, "since: want a sequence number or now", http.StatusBadRequest)
			return
		}
		since, from = n, runner.FromSeq(n+1)
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.pollTimeout)
	defer cancel()
	core := runner.CoreFrom(ctx)
	sub, err := core.Subscribe(ctx, a.topic, from)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	defer sub.Close()
	reply := pollReply{Messages: []Message{}, Next: since}
	msgs, err := sub.Fetch(ctx)
	var gap *runner.GapError
	if errors.As(err, &gap) {
		reply.Gap = fmt.Sprintf("messages %d to %d were dropped", gap.Want, gap.First-1)
		reply.Next = gap.First - 1
		msgs, err = sub.Fetch(ctx)
	}
	switch {
	case errors.Is(err, runner.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		// Nothing new within poll_timeout: an empty answer, poll again.
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	for _, m := range msgs {
		var msg Message
		if json.Unmarshal(m.Data, &msg) != nil {
			continue
		}
		msg.Seq = m.Seq
		reply.Messages = append(reply.Messages, msg)
		reply.Next = m.Seq
	}
	writeJSON(w, reply)
}

func (a *app) who(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	nicks := make([]string, 0, len(a.roster))
	for n := range a.roster {
		nicks = append(nicks, n)
	}
	a.mu.Unlock()
	sort.Strings(nicks)
	writeJSON(w, map[string][]string{"nicks": nicks})
}

func publish(ctx context.Context, topic string, m Message) (uint64, error) {
	data, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	return runner.CoreFrom(ctx).Publish(ctx, topic, data)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// ticker publishes "tick N" as nick "server" to topic every interval, until
// ctx ends. A failed publish ends it with the error, for its supervisor.
func ticker(topic string, every time.Duration) entrypoints.Coroutine {
	return func(ctx context.Context) error {
		runner.Ready(ctx)
		t := time.NewTicker(every)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if _, err := publish(ctx, topic, Message{Time: time.Now().UTC(), Nick: "server", Text: fmt.Sprintf("tick %d", n)}); err != nil {
					return fmt.Errorf("ticker: %w", err)
				}
			}
		}
	}
}

// newTicker is the coroutine entry point ticker: keys topic (default chat)
// and interval (default 30s).
func newTicker(_ map[string]string, local entrypoints.Local) (entrypoints.Coroutine, error) {
	topic := local.Get("topic")
	if topic == "" {
		topic = "chat"
	}
	every, err := local.Duration("interval", 30*time.Second)
	if err != nil {
		return nil, err
	}
	if every <= 0 {
		return nil, local.Errorf("interval", "must be positive, not %s", every)
	}
	return ticker(topic, every), nil
}

// hijackedRunner is the seed's hijacked_runner: the http runner, with a
// ticker coroutine added to its scheduler in code before it runs. Keys:
// those of egg:paster#http, plus tick_topic (default chat) and
// tick_interval (default 30s).
func hijackedRunner(ctx context.Context, app http.Handler, _ map[string]string, local entrypoints.Local) error {
	// A key hidden by a global of the same name (a variable on the
	// command line) takes the global's value, as runner.New does.
	local = runner.Unshadow(local, nil)
	topic := local.Get("tick_topic")
	if topic == "" {
		topic = "chat"
	}
	every, err := local.Duration("tick_interval", 30*time.Second)
	if err != nil {
		return err
	}
	if every <= 0 {
		return local.Errorf("tick_interval", "must be positive, not %s", every)
	}
	r, err := runner.New(app, local.Without("tick_topic").Without("tick_interval"))
	if err != nil {
		return err
	}
	if err := r.Sched.Add("ticker", ticker(topic, every)); err != nil {
		return err
	}
	return r.Run(ctx)
}
