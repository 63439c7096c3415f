package apiserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// fakeImporter reads the whole archive (unless told not to) and names one
// image per call. gate, when set, holds an import until it is closed;
// started is told when an import has begun.
type fakeImporter struct {
	mu      sync.Mutex
	calls   int
	got     []byte
	err     error
	noRead  bool
	wait    bool // wait for ctx to end after reading
	gate    chan struct{}
	started chan struct{}
}

func (f *fakeImporter) ImportImages(ctx context.Context, archive io.Reader) ([]string, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.started != nil {
		f.started <- struct{}{}
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.noRead {
		<-ctx.Done()
		return nil, fmt.Errorf("import: %w", ctx.Err())
	}
	b, err := io.ReadAll(archive)
	f.mu.Lock()
	f.got = b
	f.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("read archive: %w", err)
	}
	if f.wait {
		<-ctx.Done()
		return nil, fmt.Errorf("unpack: %w", ctx.Err())
	}
	if f.err != nil {
		return nil, f.err
	}
	return []string{"flotilla.local/demo:v1"}, nil
}

func (f *fakeImporter) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

const (
	gib = 1 << 30
	mib = 1 << 20
)

func newTestImport(t *testing.T, f ImageImporter, mutate func(*ImageImportConfig)) *ImageImport {
	t.Helper()
	cfg := DefaultImageImportConfig()
	cfg.Importer = f
	cfg.Logger = slog.New(slog.NewTextHandler(testLogWriter{t}, nil))
	if mutate != nil {
		mutate(&cfg)
	}
	im, err := NewImageImport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// post sends body to im; length -1 sends it without a Content-Length.
func post(im http.Handler, body io.Reader, length int64) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/images", body)
	req.ContentLength = length
	rec := httptest.NewRecorder()
	im.ServeHTTP(rec, req)
	return rec
}

func errorOf(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var er api.ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil {
		t.Fatalf("answer %d is not an error response: %q", rec.Code, rec.Body)
	}
	return er.Error
}

func TestImageImportLimits(t *testing.T) {
	archive := bytes.Repeat([]byte("x"), 4096)
	tests := []struct {
		name     string
		mutate   func(*ImageImportConfig)
		importer *fakeImporter
		body     io.Reader
		length   int64
		wantCode int
		wantErr  []string // substrings of the error message
		wantRead bool     // the importer got the whole archive
	}{
		{
			name:     "imported",
			importer: &fakeImporter{},
			body:     bytes.NewReader(archive), length: int64(len(archive)),
			wantCode: 200, wantRead: true,
		},
		{
			name:     "without Content-Length",
			importer: &fakeImporter{},
			body:     bytes.NewReader(archive), length: -1,
			wantCode: 200, wantRead: true,
		},
		{
			name:     "Content-Length over the limit: refused unread",
			mutate:   func(c *ImageImportConfig) { c.MaxImageBytes = 1024 },
			importer: &fakeImporter{},
			body:     bytes.NewReader(archive), length: int64(len(archive)),
			wantCode: 413, wantErr: []string{"4.0 KiB", "at most 1.0 KiB (1024 bytes)"},
		},
		{
			name:     "body over the limit without Content-Length",
			mutate:   func(c *ImageImportConfig) { c.MaxImageBytes = 1024 },
			importer: &fakeImporter{},
			body:     bytes.NewReader(archive), length: -1,
			wantCode: 413, wantErr: []string{"more than 1.0 KiB", "at most 1.0 KiB (1024 bytes)"},
		},
		{
			name:     "at the limit",
			mutate:   func(c *ImageImportConfig) { c.MaxImageBytes = int64(len(archive)) },
			importer: &fakeImporter{},
			body:     bytes.NewReader(archive), length: int64(len(archive)),
			wantCode: 200, wantRead: true,
		},
		{
			name:     "bad archive",
			importer: &fakeImporter{err: errors.New("no index.json or manifest.json")},
			body:     bytes.NewReader(archive), length: int64(len(archive)),
			wantCode: 400, wantErr: []string{"import image archive: no index.json"},
			wantRead: true,
		},
		{
			name:     "upload too slow",
			mutate:   func(c *ImageImportConfig) { c.ImageImportTimeout = 50 * time.Millisecond },
			importer: &fakeImporter{noRead: true},
			body:     bytes.NewReader(archive), length: int64(len(archive)),
			wantCode: 408, wantErr: []string{"did not arrive within 50ms"},
		},
		{
			name:     "import too slow",
			mutate:   func(c *ImageImportConfig) { c.ImageImportTimeout = 50 * time.Millisecond },
			importer: &fakeImporter{wait: true},
			body:     bytes.NewReader(archive), length: int64(len(archive)),
			wantCode: 503, wantErr: []string{"did not finish within 50ms"},
			wantRead: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			im := newTestImport(t, tt.importer, tt.mutate)
			rec := post(im, tt.body, tt.length)
			if rec.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", rec.Code, tt.wantCode, rec.Body)
			}
			if tt.wantCode == 200 {
				var res api.ImageImportResult
				if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || len(res.Images) != 1 {
					t.Errorf("answer %q, %v", rec.Body, err)
				}
			} else {
				msg := errorOf(t, rec)
				for _, want := range tt.wantErr {
					if !strings.Contains(msg, want) {
						t.Errorf("error %q lacks %q", msg, want)
					}
				}
			}
			if got := bytes.Equal(tt.importer.got, archive); got != tt.wantRead {
				t.Errorf("importer read the whole archive: %v, want %v (%d bytes)", got, tt.wantRead, len(tt.importer.got))
			}
			if tt.wantCode == 413 && tt.length > 0 && tt.importer.callCount() != 0 {
				t.Error("an archive known to be too large reached the importer")
			}
		})
	}
}

func TestImageImportOneAtATime(t *testing.T) {
	f := &fakeImporter{gate: make(chan struct{}), started: make(chan struct{}, 1)}
	im := newTestImport(t, f, nil)

	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- post(im, strings.NewReader("one"), 3) }()
	<-f.started // the first import holds the slot

	start := time.Now()
	rec := post(im, strings.NewReader("two"), 3)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("second import while one runs: %d %q (Retry-After %q); want 429 with Retry-After", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	if msg := errorOf(t, rec); !strings.Contains(msg, "another image import is running") {
		t.Errorf("error %q does not say why", msg)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("refusal took %v; want it at once", took)
	}

	close(f.gate)
	if rec := <-first; rec.Code != 200 {
		t.Fatalf("first import: %d %s", rec.Code, rec.Body)
	}
	if rec := post(im, strings.NewReader("three"), 5); rec.Code != 200 {
		t.Fatalf("import after the first finished: %d %s", rec.Code, rec.Body)
	}
	if n := f.callCount(); n != 2 {
		t.Errorf("importer called %d times, want 2", n)
	}
}

func TestImageImportFreeSpace(t *testing.T) {
	tests := []struct {
		name        string
		free, total uint64
		length      int64 // -1: no Content-Length
		wantCode    int
		wantErr     []string
	}{
		{"plenty", 50 * gib, 100 * gib, 2 * gib, 200, nil},
		{"leaves exactly 10%", 12 * gib, 100 * gib, 2 * gib, 200, nil},
		{"would leave under 10%", 11 * gib, 100 * gib, 1536 * mib, 507,
			[]string{"/var/lib/flotilla/containerd/root has 11.0 GiB free of 100.0 GiB", "importing 1.5 GiB would leave less than 10.0 GiB"}},
		{"small disk: 1 GiB floor", 1536 * mib, 8 * gib, 100 * mib, 200, nil},
		{"small disk: under 1 GiB left", 1536 * mib, 8 * gib, 600 * mib, 507, []string{"1.5 GiB free", "less than 1.0 GiB"}},
		{"disk already full", 512 * mib, 8 * gib, 1024, 507, []string{"512.0 MiB free"}},
		{"unknown size counts as the limit", 3 * gib, 100 * gib, -1, 507, []string{"without Content-Length counts as the 2.0 GiB limit"}},
		{"unknown size, room for the limit", 13 * gib, 100 * gib, -1, 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeImporter{}
			im := newTestImport(t, f, func(c *ImageImportConfig) { c.ImageDir = "/var/lib/flotilla/containerd/root" })
			im.statfs = func(path string) (uint64, uint64, error) {
				if path != "/var/lib/flotilla/containerd/root" {
					t.Errorf("statfs(%q)", path)
				}
				return tt.free, tt.total, nil
			}
			// The body is small; the check goes by the declared length.
			req := httptest.NewRequest(http.MethodPost, "/v1/images", strings.NewReader("tar"))
			req.ContentLength = tt.length
			rec := httptest.NewRecorder()
			im.ServeHTTP(rec, req)
			if tt.wantCode == 200 {
				// A body shorter than its Content-Length fails to read, but
				// it got past the disk check to the importer.
				if rec.Code == http.StatusInsufficientStorage || f.callCount() != 1 {
					t.Fatalf("refused: %d %s", rec.Code, rec.Body)
				}
				return
			}
			if rec.Code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", rec.Code, tt.wantCode, rec.Body)
			}
			msg := errorOf(t, rec)
			for _, want := range tt.wantErr {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if f.callCount() != 0 {
				t.Error("the importer ran although the disk check failed")
			}
		})
	}

	t.Run("statfs fails", func(t *testing.T) {
		f := &fakeImporter{}
		im := newTestImport(t, f, func(c *ImageImportConfig) { c.ImageDir = "/nonexistent" })
		rec := post(im, strings.NewReader("tar"), 3)
		if rec.Code != 500 || !strings.Contains(errorOf(t, rec), "/nonexistent") || f.callCount() != 0 {
			t.Fatalf("import with an unreadable image dir: %d %s", rec.Code, rec.Body)
		}
	})
	t.Run("real statfs", func(t *testing.T) {
		free, total, err := statfs(t.TempDir())
		if err != nil || total == 0 || free > total {
			t.Fatalf("statfs = %d, %d, %v", free, total, err)
		}
	})
}

func TestNewImageImport(t *testing.T) {
	im, err := NewImageImport(ImageImportConfig{Importer: &fakeImporter{}})
	if err != nil {
		t.Fatal(err)
	}
	if im.cfg.MaxImageBytes != 2*gib || im.cfg.ImageImportTimeout != 10*time.Minute {
		t.Errorf("defaults: %d bytes, %v", im.cfg.MaxImageBytes, im.cfg.ImageImportTimeout)
	}
	_, err = NewImageImport(ImageImportConfig{MaxImageBytes: -1, ImageImportTimeout: -1, ImageDir: "rel"})
	for _, want := range []string{"Importer is required", "MaxImageBytes", "ImageImportTimeout", "ImageDir"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// imageTestServer is an API Server with images and the token "tok".
func imageTestServer(t *testing.T, images ImageImporter) *Server {
	t.Helper()
	srv, err := New(Config{Store: &memStore{deps: map[string]api.Deployment{}}, TokenHash: sha256.Sum256([]byte("tok")), Images: images,
		Status: func(api.Deployment) api.DeploymentStatus { return api.DeploymentStatus{} }})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// slowBody sends chunks with a pause before each, so the upload lasts
// longer than the server's read timeout.
type slowBody struct {
	chunks [][]byte
	pause  time.Duration
}

func (b *slowBody) Read(p []byte) (int, error) {
	if len(b.chunks) == 0 {
		return 0, io.EOF
	}
	time.Sleep(b.pause)
	n := copy(p, b.chunks[0])
	b.chunks = b.chunks[1:]
	return n, nil
}

// TestImageRouteExtendsServerDeadlines runs the API behind an http.Server
// with short read and write timeouts: an ordinary request whose body is
// slower than them fails, an image upload just as slow succeeds because the
// route extends its own deadlines through the Server's response wrapper.
func TestImageRouteExtendsServerDeadlines(t *testing.T) {
	f := &fakeImporter{}
	im := newTestImport(t, f, nil)
	srv := imageTestServer(t, im)
	ts := httptest.NewUnstartedServer(srv)
	hs := NewHTTPServer(srv, slog.New(slog.NewTextHandler(testLogWriter{t}, nil)))
	hs.ReadTimeout, hs.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
	ts.Config = hs
	ts.Start()
	defer ts.Close()

	send := func(path string) (int, string, error) {
		body := &slowBody{pause: 100 * time.Millisecond}
		for range 5 {
			body.chunks = append(body.chunks, []byte("0123456789"))
		}
		req, _ := http.NewRequest(http.MethodPost, ts.URL+path, body)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := ts.Client().Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if code, body, err := send("/v1/images"); err != nil || code != 200 {
		t.Fatalf("slow image upload: %d %q, %v; want 200", code, body, err)
	}
	if string(f.got) != strings.Repeat("0123456789", 5) {
		t.Errorf("importer got %q", f.got)
	}
	if code, body, err := send("/v1/namespaces/default/deployments"); err == nil && code < 400 {
		t.Errorf("a deployment body as slow got %d %q; the server's read timeout did not apply", code, body)
	}
}

func TestServerImagesWithBareImporter(t *testing.T) {
	// A plain ImageImporter still gets the default size and time bounds.
	srv := imageTestServer(t, &fakeImporter{})
	req := httptest.NewRequest(http.MethodPost, "/v1/images", strings.NewReader("tar"))
	req.Header.Set("Authorization", "Bearer tok")
	req.ContentLength = 3 * gib
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(errorOf(t, rec), "at most 2.0 GiB") {
		t.Fatalf("3 GiB upload to a bare importer: %d %s", rec.Code, rec.Body)
	}
}

func TestNewHTTPServer(t *testing.T) {
	var logs bytes.Buffer
	hs := NewHTTPServer(http.NotFoundHandler(), slog.New(slog.NewTextHandler(&logs, nil)))
	if hs.ReadHeaderTimeout != 10*time.Second || hs.ReadTimeout != 60*time.Second || hs.WriteTimeout != 60*time.Second ||
		hs.IdleTimeout != 2*time.Minute || hs.MaxHeaderBytes != 64<<10 {
		t.Errorf("server %+v", hs)
	}
	hs.ErrorLog.Print("http: TLS handshake error from 192.0.2.9:4711: EOF")
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "TLS handshake error") || !strings.Contains(logs.String(), "component=http") {
		t.Errorf("ErrorLog did not reach slog: %q", logs.String())
	}

	// Headers over the limit are refused.
	ts := httptest.NewUnstartedServer(http.NotFoundHandler())
	ts.Config = NewHTTPServer(http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	ts.Start()
	defer ts.Close()
	req, _ := http.NewRequest(http.MethodGet, ts.URL, nil)
	req.Header.Set("X-Big", strings.Repeat("h", 128<<10))
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("128 KiB of headers: %d, want 431", resp.StatusCode)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 * mib: "1.5 GiB", 2 * gib: "2.0 GiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
