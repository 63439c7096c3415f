package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flotilla-io/flotilla/api"
)

// Bounds of POST /v1/images unless ImageImportConfig says otherwise.
const (
	DefaultMaxImageBytes      = 2 << 30
	DefaultImageImportTimeout = 10 * time.Minute
	// An import must leave the larger of minFreePercent of the image file
	// system and minFreeBytes free: containerd unpacks the layers beside
	// the archive's blobs, and a full disk stops every pod on the node
	// that writes, not just the import.
	minFreePercent = 10
	minFreeBytes   = 1 << 30
	// answerGrace is how long, past ImageImportTimeout, the route may take
	// to write its answer.
	answerGrace = 15 * time.Second
	// retryAfter is what a refused concurrent import is told to wait (s).
	retryAfter = "10"
)

// ImageImportConfig bounds what one POST /v1/images may cost the node.
type ImageImportConfig struct {
	// Importer loads the archive (the containerd runtime). Required.
	Importer ImageImporter
	// MaxImageBytes bounds one archive; a larger one is refused with 413
	// before anything is imported. Default DefaultMaxImageBytes (2 GiB).
	MaxImageBytes int64
	// ImageImportTimeout bounds one upload and import together. The route
	// extends the HTTP server's read and write deadlines (NewHTTPServer's
	// 60 s) to it. Default DefaultImageImportTimeout (10 min).
	ImageImportTimeout time.Duration
	// ImageDir is a directory on the file system the images land on:
	// containerd's root. An import that would leave less than 10% of it or
	// 1 GiB free, whichever is more, is refused with 507; the archive
	// counts at its Content-Length, or at MaxImageBytes when the upload
	// has none. Empty skips the check (a containerd whose root the agent
	// does not know).
	ImageDir string
	// Logger receives one line per import; nil discards them.
	Logger *slog.Logger
}

// DefaultImageImportConfig returns the default bounds, without an Importer.
func DefaultImageImportConfig() ImageImportConfig {
	return ImageImportConfig{MaxImageBytes: DefaultMaxImageBytes, ImageImportTimeout: DefaultImageImportTimeout}
}

// ImageImport serves POST /v1/images within its ImageImportConfig, one
// import at a time: a second upload while one runs is refused at once with
// 429, as two would compete for the same disk and containerd's content
// store. Pass it to New as Config.Images; it is an ImageImporter. It is safe
// for concurrent use.
type ImageImport struct {
	cfg  ImageImportConfig
	log  *slog.Logger
	slot chan struct{} // holds a token while an import runs
	// statfs reports the free and total bytes of the file system at path
	// (a seam for tests).
	statfs func(path string) (free, total uint64, err error)
}

var _ ImageImporter = (*ImageImport)(nil)

// NewImageImport checks cfg, fills in its defaults and returns the route's
// handler.
func NewImageImport(cfg ImageImportConfig) (*ImageImport, error) {
	if cfg.MaxImageBytes == 0 {
		cfg.MaxImageBytes = DefaultMaxImageBytes
	}
	if cfg.ImageImportTimeout == 0 {
		cfg.ImageImportTimeout = DefaultImageImportTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if cfg.Importer == nil {
		errs = append(errs, errors.New("Importer is required"))
	}
	if cfg.MaxImageBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxImageBytes %d is negative", cfg.MaxImageBytes))
	}
	if cfg.ImageImportTimeout < 0 {
		errs = append(errs, fmt.Errorf("ImageImportTimeout %v is negative", cfg.ImageImportTimeout))
	}
	if cfg.ImageDir != "" && !filepath.IsAbs(cfg.ImageDir) {
		errs = append(errs, fmt.Errorf("ImageDir %q is not an absolute path", cfg.ImageDir))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("apiserver: image import: %w", err)
	}
	return &ImageImport{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "api", "route", "POST /v1/images"),
		slot:   make(chan struct{}, 1),
		statfs: statfs,
	}, nil
}

// ImportImages passes archive to the Importer without the route's bounds:
// it is for the agent's own imports (--image-dir at start), not for clients.
func (im *ImageImport) ImportImages(ctx context.Context, archive io.Reader) ([]string, error) {
	return im.cfg.Importer.ImportImages(ctx, archive)
}

// importImages serves POST /v1/images with Config.Images. An *ImageImport
// brings its bounds; any other ImageImporter gets the default size and time
// bounds only, as one-at-a-time needs state the Server does not keep, and
// the free-space check needs ImageDir.
func (s *Server) importImages(w http.ResponseWriter, r *http.Request) {
	switch im := s.cfg.Images.(type) {
	case nil:
		writeError(w, http.StatusNotImplemented, "this agent runs no containers; send images to a node agent")
	case *ImageImport:
		im.ServeHTTP(w, r)
	default:
		s.log.Warn("image import without apiserver.NewImageImport: not limited to one at a time, free space not checked")
		cfg := DefaultImageImportConfig()
		cfg.Importer, cfg.Logger = im, s.cfg.Logger
		bounded, err := NewImageImport(cfg)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		bounded.ServeHTTP(w, r)
	}
}

// ServeHTTP imports the request body as an image archive, answering
// api.ImageImportResult, or 413 (too large), 429 (another import runs), 507
// (too little disk), 408 (the upload was too slow), 503 (the import was too
// slow) or 400 (the importer failed: a bad archive, usually).
func (im *ImageImport) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	limit := im.cfg.MaxImageBytes
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, im.tooLarge(formatBytes(r.ContentLength)))
		return
	}
	select {
	case im.slot <- struct{}{}:
		defer func() { <-im.slot }()
	default:
		w.Header().Set("Retry-After", retryAfter)
		writeError(w, http.StatusTooManyRequests, "another image import is running on this agent; imports run one at a time, so retry once it has finished")
		return
	}
	if code, msg := im.checkFreeSpace(r.ContentLength); code != 0 {
		writeError(w, code, msg)
		return
	}

	// The server's 60 s read and write timeouts are for ordinary requests;
	// an archive of a few GiB takes longer to send and unpack.
	deadline := start.Add(im.cfg.ImageImportTimeout)
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(deadline); err != nil {
		im.log.Debug("cannot extend the read deadline; the server's own applies", "err", err)
	}
	if err := rc.SetWriteDeadline(deadline.Add(answerGrace)); err != nil {
		im.log.Debug("cannot extend the write deadline; the server's own applies", "err", err)
	}
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()

	body := &importBody{r: http.MaxBytesReader(w, r.Body, limit)}
	names, err := im.cfg.Importer.ImportImages(ctx, body)
	log := im.log.With("bytes", body.n, "duration", time.Since(start).Round(time.Millisecond))
	switch {
	case body.tooLarge:
		// Whatever the importer made of a cut-off archive, it is refused;
		// the rest of the body is not read.
		log.Warn("image archive over the size limit refused", "limit", limit)
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestEntityTooLarge, im.tooLarge("more than "+formatBytes(limit)))
	case err == nil:
		log.Info("images imported", "images", names)
		writeJSON(w, http.StatusOK, api.ImageImportResult{Images: names})
	case !body.eof && (body.timedOut || errors.Is(ctx.Err(), context.DeadlineExceeded)):
		log.Warn("image upload too slow", "err", err)
		writeError(w, http.StatusRequestTimeout, fmt.Sprintf("the image archive did not arrive within %v (the import timeout); %s of it arrived; send it faster or in smaller archives", im.cfg.ImageImportTimeout, formatBytes(body.n)))
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		log.Warn("image import too slow", "err", err)
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("the image import did not finish within %v (the import timeout): %v; retry, or send smaller archives", im.cfg.ImageImportTimeout, err))
	case r.Context().Err() != nil:
		log.Warn("image upload abandoned by the client", "err", err)
		writeError(w, http.StatusBadRequest, "the client went away during the import")
	default:
		log.Warn("image import failed", "err", err)
		writeError(w, http.StatusBadRequest, "import image archive: "+err.Error())
	}
}

func (im *ImageImport) tooLarge(size string) string {
	return fmt.Sprintf("the image archive is %s; this agent takes at most %s (%d bytes) in one upload; split the images into several archives", size, formatBytes(im.cfg.MaxImageBytes), im.cfg.MaxImageBytes)
}

// checkFreeSpace returns the status and message that refuse an archive of
// size bytes (-1: unknown) for lack of disk, or 0 and "".
func (im *ImageImport) checkFreeSpace(size int64) (int, string) {
	if im.cfg.ImageDir == "" {
		return 0, ""
	}
	free, total, err := im.statfs(im.cfg.ImageDir)
	if err != nil {
		im.log.Error("cannot check free space for an image import", "dir", im.cfg.ImageDir, "err", err)
		return http.StatusInternalServerError, fmt.Sprintf("check free space in %s: %v", im.cfg.ImageDir, err)
	}
	need, what := uint64(max(size, 0)), "importing "+formatBytes(max(size, 0))
	if size < 0 {
		need = uint64(im.cfg.MaxImageBytes)
		what = fmt.Sprintf("an upload without Content-Length counts as the %s limit, which", formatBytes(im.cfg.MaxImageBytes))
	}
	reserve := max(total/100*minFreePercent, minFreeBytes)
	if free >= need && free-need >= reserve {
		return 0, ""
	}
	return http.StatusInsufficientStorage, fmt.Sprintf("not enough disk for the image archive: %s has %s free of %s, and %s would leave less than %s (%d%% of the disk or %s, whichever is more); remove unused images or give the node more disk",
		im.cfg.ImageDir, formatBytes(free), formatBytes(total), what, formatBytes(reserve), minFreePercent, formatBytes(uint64(minFreeBytes)))
}

// statfs reports the bytes free to unprivileged users and the size of the
// file system holding path.
func statfs(path string) (free, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// importBody is the request body as the importer reads it, noting how it
// ended: over the size limit, past the read deadline, or complete.
type importBody struct {
	r        io.Reader
	n        int64
	eof      bool
	tooLarge bool
	timedOut bool
}

func (b *importBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	var tooLarge *http.MaxBytesError
	switch {
	case err == io.EOF:
		b.eof = true
	case errors.As(err, &tooLarge):
		b.tooLarge = true
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.timedOut = true
	}
	return n, err
}

// formatBytes renders n in binary units: "512 B", "1.5 GiB".
func formatBytes[T int64 | uint64](n T) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(uint64(n), 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := uint64(n) / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
