# An ingress is imported by "namespace/name"; a bare "name" means namespace
# "default". Its TLS keys cannot be read back: the next apply sends them.
terraform import flotilla_ingress.shop shop/shop
