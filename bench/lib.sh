# Shared by the bench/*.sh scripts: sourced, not run.

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_nginx DIR PORT: a one-worker nginx serving DIR/www on 127.0.0.1:PORT, the yardstick the
# HTTP benchmarks compare against. Sets NGINX_PID.
start_nginx() {
    _dir=$1
    _port=$2
    _nginx=nginx
    command -v nginx >/dev/null || _nginx=/usr/sbin/nginx
    mkdir -p "$_dir/tmp" "$_dir/www"
    cat >"$_dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $_dir/nginx.pid;
error_log $_dir/nginx.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/json;
    keepalive_requests 100000;
    client_body_temp_path $_dir/tmp;
    proxy_temp_path $_dir/tmp;
    fastcgi_temp_path $_dir/tmp;
    uwsgi_temp_path $_dir/tmp;
    scgi_temp_path $_dir/tmp;
    server {
        listen 127.0.0.1:$_port;
        location / { root $_dir/www; }
    }
}
CONF
    "$_nginx" -c "$_dir/nginx.conf" -p "$_dir" >"$_dir/nginx.log" 2>&1 &
    NGINX_PID=$!
}
