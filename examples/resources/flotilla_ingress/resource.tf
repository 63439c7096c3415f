# shop.example.com/api/... goes to the api service, the rest of the site
# to web; HTTPS with the site's certificate, and plain HTTP redirected to
# it. The key comes from a file (or a secret store), never a literal.
resource "flotilla_ingress" "shop" {
  name         = "shop"
  namespace    = "shop"
  ssl_redirect = true

  rule {
    host = "shop.example.com"
    path {
      path    = "/api"
      service = "api"
      port    = 8080
    }
    path {
      path      = "/"
      service   = flotilla_service.web.name
      port_name = "http"
    }
  }

  tls {
    hosts       = ["shop.example.com"]
    certificate = file("${path.module}/shop.example.com.crt")
    key         = file("${path.module}/shop.example.com.key")
  }
}

# Requests for any other host go to a catch-all page. One ingress in the
# cluster may have a default_backend.
resource "flotilla_ingress" "fallback" {
  name      = "fallback"
  namespace = "shop"

  default_backend {
    service = "not-found"
  }
}
