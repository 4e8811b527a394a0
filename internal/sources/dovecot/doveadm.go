package dovecot

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources"
)

// DoveadmConfig configures a Doveadm counter.
type DoveadmConfig struct {
	// URL is the doveadm HTTP listener (service doveadm { inet_listener
	// http { port = 8080 } }), e.g. http://127.0.0.1:8080; requests go to
	// URL/doveadm/v1.
	URL string
	// APIKey is Dovecot's doveadm_api_key, sent as "Authorization:
	// X-Dovecot-API base64(key)". Exactly one of APIKey and Password is set.
	APIKey string
	// Password is Dovecot's doveadm_password, sent as Basic authorization
	// of the user "doveadm".
	Password string
	// Tenants are the tenants whose mailboxes this Dovecot holds; a mailbox
	// of another tenant is not served. Empty: every tenant.
	Tenants []string
	// HTTPClient sends the requests; nil is a client without a timeout of
	// its own (Timeout bounds each request).
	HTTPClient *http.Client
	// Timeout bounds one Counts request; zero is DefaultDoveadmTimeout.
	Timeout time.Duration
}

// DefaultDoveadmTimeout bounds a Counts request when the config names none.
const DefaultDoveadmTimeout = 10 * time.Second

// maxDoveadmAnswer bounds the body of a doveadm answer: one mailbox status
// is under 100 bytes, so this leaves room for tens of thousands.
const maxDoveadmAnswer = 4 << 20

// Doveadm is a sources.Counter that reads unseen counts through Dovecot's
// doveadm HTTP API: one request per Counts call with one mailboxStatus
// command per mailbox. It is safe for concurrent use.
type Doveadm struct {
	endpoint string
	auth     string
	tenants  map[string]bool
	client   *http.Client
	timeout  time.Duration
}

var _ sources.Counter = (*Doveadm)(nil)

// NewDoveadm checks cfg and builds the counter.
func NewDoveadm(cfg DoveadmConfig) (*Doveadm, error) {
	endpoint, err := doveadmEndpoint(cfg.URL)
	if err != nil {
		return nil, err
	}
	var auth string
	switch {
	case cfg.APIKey != "" && cfg.Password != "":
		return nil, errors.New("doveadm: set an API key or a password, not both")
	case cfg.APIKey != "":
		auth = "X-Dovecot-API " + base64.StdEncoding.EncodeToString([]byte(cfg.APIKey))
	case cfg.Password != "":
		auth = "Basic " + base64.StdEncoding.EncodeToString([]byte("doveadm:"+cfg.Password))
	default:
		return nil, errors.New("doveadm: an API key (doveadm_api_key) or a password (doveadm_password) is required")
	}
	d := &Doveadm{endpoint: endpoint, auth: auth, client: cfg.HTTPClient, timeout: cfg.Timeout}
	if d.client == nil {
		d.client = &http.Client{}
	}
	if d.timeout <= 0 {
		d.timeout = DefaultDoveadmTimeout
	}
	if len(cfg.Tenants) > 0 {
		d.tenants = make(map[string]bool, len(cfg.Tenants))
		for _, t := range cfg.Tenants {
			d.tenants[strings.ToLower(t)] = true
		}
	}
	return d, nil
}

// doveadmEndpoint is the URL that commands are posted to: base with
// /doveadm/v1 added unless it already ends so.
func doveadmEndpoint(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("doveadm URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("doveadm URL %q: want http://host:port or https://host:port", base)
	}
	if u.User != nil {
		return "", errors.New("doveadm URL: give the password in its own setting, not in the URL")
	}
	path := strings.TrimSuffix(u.Path, "/")
	if !strings.HasSuffix(path, "/doveadm/v1") {
		path += "/doveadm/v1"
	}
	u.Path = path
	return u.String(), nil
}

// Name is "doveadm".
func (d *Doveadm) Name() string { return "doveadm" }

// Counts reads the unseen count of each mailbox in one doveadm request.
// A mailbox of a tenant outside the config's, or of a user doveadm does
// not know (exit code 67), is sources.ErrNotServed.
func (d *Doveadm) Counts(ctx context.Context, boxes []sources.Mailbox) []sources.Count {
	counts := make([]sources.Count, len(boxes))
	var commands []doveadmCommand
	pending := map[string]int{}
	for i, box := range boxes {
		if err := d.check(box); err != nil {
			counts[i].Err = err
			continue
		}
		tag := "c" + strconv.Itoa(i)
		pending[tag] = i
		commands = append(commands, mailboxStatusCommand(box, tag))
	}
	if len(commands) == 0 {
		return counts
	}
	answers, err := d.post(ctx, commands)
	for tag, i := range pending {
		answer, ok := answers[tag]
		switch {
		case ok:
			counts[i].Unread, counts[i].Err = answer.unseen(boxes[i].Name)
		case err != nil:
			counts[i].Err = err
		default:
			counts[i].Err = errors.New("doveadm did not answer for this mailbox")
		}
		if counts[i].Err != nil && counts[i].Err != sources.ErrNotServed {
			counts[i].Err = fmt.Errorf("reading unseen count of %s/%s from doveadm: %w", boxes[i].User, boxes[i].Name, counts[i].Err)
		}
	}
	return counts
}

// check refuses a mailbox that this counter does not serve or cannot ask
// for.
func (d *Doveadm) check(box sources.Mailbox) error {
	if d.tenants != nil && !d.tenants[strings.ToLower(box.Tenant)] {
		return sources.ErrNotServed
	}
	if box.User == "" || box.Name == "" {
		return errors.New("doveadm: a mailbox needs a user and a name")
	}
	if strings.ContainsAny(box.Name, "*%") {
		return fmt.Errorf("doveadm: mailbox name %q has a wildcard", sources.Clip(box.Name))
	}
	return nil
}

// doveadmCommand is one [name, parameters, tag] command of a request.
type doveadmCommand [3]any

// mailboxStatusParams are the parameters of doveadm's mailboxStatus.
type mailboxStatusParams struct {
	User        string   `json:"user"`
	Field       []string `json:"field"`
	MailboxMask []string `json:"mailboxMask"`
}

func mailboxStatusCommand(box sources.Mailbox, tag string) doveadmCommand {
	return doveadmCommand{"mailboxStatus", mailboxStatusParams{
		User: box.User, Field: []string{"unseen"}, MailboxMask: []string{box.Name},
	}, tag}
}

// post sends the commands in one request and reads the answers by tag.
// With an error, answers holds those read before it.
func (d *Doveadm) post(ctx context.Context, commands []doveadmCommand) (map[string]doveadmAnswer, error) {
	body, err := json.Marshal(commands)
	if err != nil {
		return nil, fmt.Errorf("encoding doveadm request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building doveadm request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", d.auth)
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("posting to doveadm: %w", err)
	}
	defer resp.Body.Close()
	limited := &limitedReader{r: resp.Body, left: maxDoveadmAnswer}
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, fmt.Errorf("doveadm answered %s: %s", resp.Status, sources.Clip(strings.TrimSpace(string(snippet))))
	}
	answers, err := decodeDoveadmAnswers(limited)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("reading doveadm answer: %w", ctx.Err())
	}
	return answers, err
}

// limitedReader reads at most left bytes from r and then fails, so that an
// answer over the bound is an error rather than a cut-off document.
type limitedReader struct {
	r    io.Reader
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("doveadm answer larger than %d bytes", int64(maxDoveadmAnswer))
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}
