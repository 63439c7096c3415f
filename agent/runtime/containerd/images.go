package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"

	"github.com/flotilla-io/flotilla/agent/runtime"
)

// importedPrefix names images from an archive that carry no usable name.
const importedPrefix = "flotilla.local/imported"

// normalizeRef turns "demo:v1" into "docker.io/library/demo:v1", as
// containerd and Docker name images.
func normalizeRef(image string) (string, error) {
	named, err := reference.ParseDockerRef(image)
	if err != nil {
		return "", fmt.Errorf("invalid image reference %q: %w", image, errors.Join(runtime.ErrInvalidSpec, err))
	}
	return named.String(), nil
}

// EnsureImage makes image available and unpacked, pulling it if missing.
// Concurrent calls for one image share a single pull.
func (r *Runtime) EnsureImage(ctx context.Context, image string) (bool, error) {
	ref, err := normalizeRef(image)
	if err != nil {
		return false, err
	}
	// Callers that waited for another's pull of the same image pulled it
	// too, as far as they can tell.
	pulled, err, _ := r.pulls.Do(ref, func() (any, error) {
		return r.ensureImage(r.nsCtx(ctx), image, ref)
	})
	p, _ := pulled.(bool)
	return p, err
}

func (r *Runtime) ensureImage(ctx context.Context, image, ref string) (bool, error) {
	img, err := r.client.GetImage(ctx, ref)
	if err == nil {
		return false, r.unpack(ctx, img)
	}
	if !errdefs.IsNotFound(err) {
		return false, fmt.Errorf("look up image %q: %w", image, err)
	}
	host := reference.Domain(mustNamed(ref))
	log := r.log.With("image", ref, "registry", host)
	log.Info("pulling image")
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(
			docker.WithPlainHTTP(r.plainHTTP),
			docker.WithClient(r.httpClient),
		),
	})
	_, err = r.client.Pull(ctx, ref,
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(r.cfg.Snapshotter),
		containerd.WithResolver(resolver),
	)
	if err != nil {
		return false, pullError(image, host, err)
	}
	log.Info("pulled image")
	return true, nil
}

// plainHTTP says whether a registry host is reached over plain HTTP.
func (r *Runtime) plainHTTP(host string) (bool, error) {
	if slices.Contains(r.cfg.InsecureRegistries, host) {
		return true, nil
	}
	return docker.MatchLocalhost(host)
}

// pullError explains a failed pull: what failed and what to check.
func pullError(image, host string, err error) error {
	switch {
	case errdefs.IsNotFound(err):
		return fmt.Errorf("pull %q: not found in registry %s; check the image name and tag: %w", image, host, errors.Join(runtime.ErrImageNotFound, err))
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("pull %q: registry %s serves plain HTTP; add it to insecure_registries: %w", image, host, err)
	case isUnreachable(err):
		return fmt.Errorf("pull %q: registry %s is unreachable; check that it is running and reachable from this node (plain-HTTP registries must be listed in insecure_registries): %w", image, host, err)
	case errdefs.IsUnauthorized(err) || errdefs.IsPermissionDenied(err):
		return fmt.Errorf("pull %q: registry %s refused access; check the image name and registry credentials: %w", image, host, errors.Join(runtime.ErrImageAccessDenied, err))
	default:
		return fmt.Errorf("pull %q from registry %s: %w; check the image name and the registry", image, host, err)
	}
}

func isUnreachable(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, context.DeadlineExceeded)
}

func mustNamed(ref string) reference.Named {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		// ref came out of normalizeRef, so this cannot happen.
		panic(fmt.Sprintf("containerd runtime: normalized ref %q does not parse: %v", ref, err))
	}
	return n
}

// unpack makes sure img has a snapshot chain in our snapshotter.
func (r *Runtime) unpack(ctx context.Context, img containerd.Image) error {
	ok, err := img.IsUnpacked(ctx, r.cfg.Snapshotter)
	if err != nil {
		return fmt.Errorf("check image %q: %w", img.Name(), err)
	}
	if ok {
		return nil
	}
	if err := img.Unpack(ctx, r.cfg.Snapshotter); err != nil {
		return fmt.Errorf("unpack image %q into %s: %w; check that the image has a linux/amd64 variant", img.Name(), r.cfg.Snapshotter, err)
	}
	return nil
}

// ImportImages imports a docker-save tarball or OCI archive, unpacks every
// image in it for this platform, and returns their names. Images named only by
// a bare tag (an OCI ref.name such as "v1") or not at all are named
// flotilla.local/imported@<digest>.
func (r *Runtime) ImportImages(ctx context.Context, archive io.Reader) ([]string, error) {
	ctx = r.nsCtx(ctx)
	imgs, err := r.client.Import(ctx, archive,
		containerd.WithImageRefTranslator(func(name string) string {
			if !strings.ContainsAny(name, "/:@") {
				return "" // a bare tag names no repository
			}
			ref, err := normalizeRef(name)
			if err != nil {
				return ""
			}
			return ref
		}),
		containerd.WithDigestRef(func(d digest.Digest) string { return importedPrefix + "@" + d.String() }),
		containerd.WithSkipDigestRef(func(name string) bool { return name != "" }),
	)
	if err != nil {
		return nil, fmt.Errorf("import images: %w; the archive must be a docker-save tarball or an OCI image layout tar", err)
	}
	names := make([]string, 0, len(imgs))
	for _, i := range imgs {
		if err := r.unpack(ctx, containerd.NewImage(r.client, i)); err != nil {
			return names, fmt.Errorf("import images: %w", err)
		}
		names = append(names, i.Name)
	}
	r.log.Info("imported images", "images", names)
	return names, nil
}

// PruneImages deletes the images of the namespace that no container uses
// and keep does not name (keep gets image references as pods write them,
// "demo:v1"; nil keeps none), then lets containerd collect their content
// and snapshots at once. It returns the names it deleted. A node short of
// disk calls it; an image deleted here is pulled again when a pod needs it.
func (r *Runtime) PruneImages(ctx context.Context, keep func(ref string) bool) ([]string, error) {
	ctx = r.nsCtx(ctx)
	ctrs, err := r.client.ContainerService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune images: list containers: %w", err)
	}
	used := map[string]bool{}
	for _, c := range ctrs {
		used[c.Image] = true
	}
	imgs, err := r.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune images: list images: %w", err)
	}
	var deleted []string
	var errs []error
	for _, img := range imgs {
		if used[img.Name] || (keep != nil && keep(img.Name)) {
			continue
		}
		// Synchronous: the space is free when PruneImages returns.
		if err := r.client.ImageService().Delete(ctx, img.Name, images.SynchronousDelete()); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete image %s: %w", img.Name, err))
			continue
		}
		deleted = append(deleted, img.Name)
	}
	if len(deleted) > 0 && len(errs) == 0 {
		r.log.Info("pruned unused images", "images", deleted)
	}
	return deleted, errors.Join(errs...)
}

// ImageRef is image as the runtime names it ("demo:v1" is
// "docker.io/library/demo:v1"), for PruneImages' keep; "" if it does not
// parse.
func ImageRef(image string) string {
	ref, err := normalizeRef(image)
	if err != nil {
		return ""
	}
	return ref
}
