package api

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
)

// queryReader reads a route's query parameters (logs, exec), collecting
// every error so that one answer names them all.
type queryReader struct {
	q    url.Values
	errs []error
}

// only refuses the parameters not in known; the error names the route's
// parameters as list says them.
func (r *queryReader) only(list string, known ...string) {
	for k := range r.q {
		if !slices.Contains(known, k) {
			r.errs = append(r.errs, fmt.Errorf("unknown parameter %q; the parameters are %s", TruncateText(k, 40), list))
		}
	}
}

// flag reads a boolean parameter into to: given without a value (?follow)
// it is true, as are 1 and true; absent, to is left as it is.
func (r *queryReader) flag(name string, to *bool) {
	if !r.q.Has(name) {
		return
	}
	v := r.q.Get(name)
	if v == "" {
		*to = true
		return
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s: %q is not true or false", name, TruncateText(v, 40)))
	}
	*to = b
}

// add records an error of the route's own parameters.
func (r *queryReader) add(err error) { r.errs = append(r.errs, err) }

// err is every error read, joined; nil when there were none.
func (r *queryReader) err() error { return errors.Join(r.errs...) }
