package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/pushproxy/pushproxy/internal/sources/graph"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

// graphInbox is a Graph tenant for the Graph counter: the Entra token
// endpoint (client credentials) and $batch reads of each user's Inbox
// unreadItemCount, as Graph answers them.
type graphInbox struct {
	mu     sync.Mutex
	unread map[string]int // by user id
	reads  int
}

var inboxURL = regexp.MustCompile(`^/?users/([^/]+)/mailFolders/inbox\?\$select=unreadItemCount$`)

func (g *graphInbox) set(userID string, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.unread[userID] = n
}

func (g *graphInbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"):
		if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" || r.PostForm.Get("client_secret") != "app-secret" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		_, _ = w.Write([]byte(`{"token_type":"Bearer","expires_in":3599,"access_token":"graph-app-token"}`))
	case r.Method == http.MethodPost && r.URL.Path == "/v1.0/$batch" && r.Header.Get("Authorization") == "Bearer graph-app-token":
		var batch graph.BatchRequest
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		var resp graph.BatchResponse
		for _, req := range batch.Requests {
			item := graph.BatchItem{ID: req.ID, Status: http.StatusNotFound, Body: json.RawMessage(`{"error":{"code":"ErrorItemNotFound","message":"not found"}}`)}
			if m := inboxURL.FindStringSubmatch(req.URL); m != nil {
				if n, ok := g.unread[m[1]]; ok {
					item.Status, item.Body = http.StatusOK, json.RawMessage(fmt.Sprintf(`{"id":"AAMkInbox=","unreadItemCount":%d}`, n))
					g.reads++
				}
			}
			resp.Responses = append(resp.Responses, item)
		}
		_ = json.NewEncoder(w).Encode(resp)
	default:
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":{"code":"BadRequest","message":"` + r.Method + " " + r.URL.Path + `"}}`))
	}
}

// TestStandaloneGraphCountsAreExact: Graph change notifications carry no
// count, so ingest stores an estimate (one more for new mail, unknown for
// a read) and the badge moves at once; the reconciler then reads the
// Inbox's unreadItemCount with an app-only token and the badge is exact
// within --reconcile-estimated-delay, after every notification.
func TestStandaloneGraphCountsAreExact(t *testing.T) {
	const aliceID = "8ee44408-0679-472c-bc2a-692812af3437"
	dir := t.TempDir()
	g := &graphInbox{unread: map[string]int{aliceID: 0}}
	srv := httptest.NewServer(g)
	defer srv.Close()
	users := testfs.Write(t, dir, "graph-users.json", `{"users":[{"user_id":"`+aliceID+`","tenant_id":"bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f","tenant":"example.com","address":"alice@example.com"}]}`)
	secret := testfs.Write(t, dir, "app-secret", "app-secret\n")
	ingestAddr, natsAddr, _, _ := startStandaloneWith(t, filepath.Join(dir, "data"), nil,
		"--graph-users", users, "--graph-client-state", "graph-client-state",
		"--graph-app-tenant-id", "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f", "--graph-client-id", "2f6c1e4a-9b7d-4c3e-8a1f-5d6e7f8a9b0c",
		"--graph-client-secret-file", secret, "--graph-authority-url", srv.URL, "--graph-api-url", srv.URL+"/v1.0", "--reconcile-retry-delay", "200ms", "--debounce", "50ms",
		"--reconcile-estimated-delay", "300ms")
	base := "http://" + ingestAddr
	if code := post(t, base+"/v1/subscriptions", `{"tenant":"example.com","user":"alice@example.com","appId":"demo","deviceId":"phone-alice","platform":"APNS"}`); code != http.StatusCreated {
		t.Fatalf("subscribe: %d", code)
	}
	conn, keyer := connectStandalone(t, natsAddr)
	notify := func(change, message string) {
		t.Helper()
		body := `{"value":[{"subscriptionId":"7f105c7d-2dc5-4530-97cd-4e7ae6534c07","changeType":"` + change + `",` +
			`"resource":"Users/` + aliceID + `/Messages/` + message + `","clientState":"graph-client-state","tenantId":"bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f"}]}`
		resp, err := http.Post(base+"/v1/graph", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("Graph notification %s: %d", change, resp.StatusCode)
		}
	}
	// Five unread in the mailbox, Graph tells of one new message: the
	// estimate (1) goes out at once, the true count (5) right after.
	g.set(aliceID, 5)
	notify("created", "AAMkMessage1=")
	waitForCount(t, conn.JS, keyer, "alice@example.com", 5)
	// A read: the notification says nothing of the count; 4 is read.
	g.set(aliceID, 4)
	notify("updated", "AAMkMessage1=")
	waitForCount(t, conn.JS, keyer, "alice@example.com", 4)
	// Two deleted in another client, one notification each, and one more
	// read that Graph's notification of was lost: the estimate says 2,
	// the mailbox 1.
	g.set(aliceID, 1)
	notify("deleted", "AAMkMessage2=")
	notify("deleted", "AAMkMessage3=")
	waitForCount(t, conn.JS, keyer, "alice@example.com", 1)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reads < 3 {
		t.Fatalf("the reconciler read Graph %d times, want at least once per change", g.reads)
	}
}
