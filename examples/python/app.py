"""The design guide's CQRS endpoints as a small Flask service on amebo.

  POST /users                      {"email", "name"} -> 201 {"user_id", "version"}
  POST /users/<id>/verify-email    -> 200 {"user_id", "version", "status"}
  GET  /users/<id>                 -> 200 the read model's row, or 404

Commands go through UserCommandHandler into amebo; then the read model catches up, so a
client reads its own writes. Errors: 400 bad request body, 404 unknown user, 409 a version
conflict or a command the user's state refuses, 422 a payload refused by its action's
schema. Each request opens its own connection (put pgbouncer in front for pooling).

Run (connection from the PG* environment variables or --conninfo):
  python3 examples/python/app.py --port 8000
"""
import argparse
import uuid

from flask import Flask, g, jsonify, request
from werkzeug.serving import make_server

from amebo_store import (AggregateNotFound, AmeboEventStore, ConcurrencyError,
                         SchemaRejected, connect)
from users import UserCommandHandler, UserProjection

ERROR_STATUS = {AggregateNotFound: 404, ConcurrencyError: 409, SchemaRejected: 422,
                ValueError: 409}


# Builds the Flask application; conninfo is a libpq connection string ("" = PG* variables).
def create_app(conninfo=""):
    app = Flask(__name__)

    # The request's connection, opened on first use.
    def connection():
        if "conn" not in g:
            g.conn = connect(conninfo)
        return g.conn

    # Closes the request's connection.
    @app.teardown_appcontext
    def close_connection(_exception):
        conn = g.pop("conn", None)
        if conn is not None:
            conn.close()

    # Answers a domain exception with the status of its nearest class in ERROR_STATUS.
    def domain_error(error):
        status = next(ERROR_STATUS[c] for c in type(error).__mro__ if c in ERROR_STATUS)
        return jsonify({"error": str(error)}), status

    for error_class in ERROR_STATUS:
        app.register_error_handler(error_class, domain_error)

    # Runs a command and lets the read model catch up; returns the user aggregate.
    def run_command(method, command):
        conn = connection()
        user = method(UserCommandHandler(AmeboEventStore(conn)), command)
        UserProjection(conn).catch_up()
        return user

    # Command side: creates a user.
    @app.post("/users")
    def create_user():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not {"email", "name"} <= body.keys():
            return jsonify({"error": "a JSON object with email and name is required"}), 400
        command = {"user_id": str(uuid.uuid4()), "email": body["email"], "name": body["name"]}
        user = run_command(UserCommandHandler.handle_create_user, command)
        return jsonify({"user_id": user.user_id, "version": user.version}), 201

    # Command side: marks a user's email verified.
    @app.post("/users/<user_id>/verify-email")
    def verify_email(user_id):
        user = run_command(UserCommandHandler.handle_verify_email, {"user_id": user_id})
        return jsonify({"user_id": user.user_id, "version": user.version,
                        "status": user.status})

    # Query side: reads the read model.
    @app.get("/users/<user_id>")
    def get_user(user_id):
        user = UserProjection(connection()).get_user(user_id)
        if not user:
            return jsonify({"error": "User not found"}), 404
        return jsonify(user)

    return app


# Serves the application on 127.0.0.1 (port 0: any free port) until killed; prints the
# address it listens on first.
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conninfo", default="", help="libpq connection string")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = make_server("127.0.0.1", args.port, create_app(args.conninfo), threaded=True)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
