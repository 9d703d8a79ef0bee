// Docs/openapi.yaml as the node serves it at `GET /v1/openapi.yaml`. Generated, do not edit: change
// Docs/openapi.yaml and run `TEAL_RECORD_OPENAPI=1 swift test --filter OpenAPIDocumentTests` (the test
// fails while the two differ).

/// The OpenAPI 3.1 document of the node's API.
public enum OpenAPIDocument {
  public static let yaml = #"""
    openapi: 3.1.0
    info:
      title: Teal node API
      version: "1"
      summary: The HTTP/JSON API every Teal node serves.
      description: >-
        Any node answers any request: writes are forwarded to the leader and answered once applied on
        the answering node; reads are linearizable (a ReadIndex confirmed by the leader) unless
        `stale=true`. JSON keys are sorted, optional fields are left out when absent, times are ISO-8601
        UTC with milliseconds, and indexes, terms and generations are unsigned 64-bit integers. This
        document is the contract: the node serves it at `/v1/openapi.yaml`, and the cluster tests check
        every answer they receive against it (Docs/API.md, "The OpenAPI document").
    servers:
      - url: http://127.0.0.1:7070
        description: node n1 of a local cluster (`teal cluster up`)
    security:
      - bearer: []
    tags:
      - name: node
      - name: cluster
      - name: services
      - name: deployments
      - name: variables
    paths:
      /health:
        get:
          operationId: health
          tags: [node]
          summary: The process is up (no token needed).
          security: []
          responses:
            "200":
              description: The node's process answers.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/HealthResponse" }
            default: { $ref: "#/components/responses/Error" }
      /ready:
        get:
          operationId: ready
          tags: [node]
          summary: 200 when the node is a member with a known leader, else 503.
          responses:
            "200":
              description: Ready.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/ReadyResponse" }
            "503":
              description: Not ready (no known leader).
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/ReadyResponse" }
            default: { $ref: "#/components/responses/Error" }
      /metrics:
        get:
          operationId: metrics
          tags: [node]
          summary: This node's metrics, Prometheus text format 0.0.4 (Docs/OPERATIONS.md, "Metrics").
          responses:
            "200":
              description: The exposition.
              content:
                text/plain:
                  schema: { type: string }
            default: { $ref: "#/components/responses/Error" }
      /v1/openapi.yaml:
        get:
          operationId: openAPIDocument
          tags: [node]
          summary: This document.
          responses:
            "200":
              description: The OpenAPI document the node was built with.
              content:
                application/yaml:
                  schema: { type: string }
            default: { $ref: "#/components/responses/Error" }
      /v1/cluster:
        get:
          operationId: clusterStatus
          tags: [cluster]
          summary: Leader, term, indexes and every member with its committed liveness.
          parameters:
            - $ref: "#/components/parameters/stale"
          responses:
            "200":
              description: The cluster as the answering node sees it.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/ClusterStatus" }
            default: { $ref: "#/components/responses/Error" }
      /v1/cluster/state:
        get:
          operationId: clusterStateDigest
          tags: [cluster]
          summary: This node's applied index and the SHA-256 of its canonical state snapshot.
          responses:
            "200":
              description: The digest.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/ClusterStateDigest" }
            default: { $ref: "#/components/responses/Error" }
      /v1/cluster/members:
        get:
          operationId: listMembers
          tags: [cluster]
          summary: The Raft voters and learners with their addresses, the change in flight and the last one.
          parameters:
            - $ref: "#/components/parameters/stale"
          responses:
            "200":
              description: The membership as the answering node knows it.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/MembershipView" }
            default: { $ref: "#/components/responses/Error" }
        post:
          operationId: addMember
          tags: [cluster]
          summary: >-
            Adds a node: it joins as a learner and the leader promotes it to voter once it caught up.
            One membership change at a time (409 while one is in flight); a removed id is never
            admitted again (409).
          parameters:
            - $ref: "#/components/parameters/idempotencyKey"
          requestBody:
            required: true
            content:
              application/json:
                schema: { $ref: "#/components/schemas/MemberAddRequest" }
          responses:
            "202":
              description: The add is recorded as the change in flight; poll GET until `change` is absent.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/MembershipView" }
            default: { $ref: "#/components/responses/Error" }
      /v1/cluster/members/{id}:
        parameters:
          - $ref: "#/components/parameters/memberID"
        delete:
          operationId: removeMember
          tags: [cluster]
          summary: >-
            Removes a member (a leader hands leadership away first). 404 for a non-member, 409 for the
            last voter or while another change is in flight; removing the node being added aborts the add.
          parameters:
            - $ref: "#/components/parameters/idempotencyKey"
          responses:
            "202":
              description: The removal is recorded as the change in flight; poll GET until `change` is absent.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/MembershipView" }
            default: { $ref: "#/components/responses/Error" }
      /v1/services:
        get:
          operationId: listServices
          tags: [services]
          parameters:
            - $ref: "#/components/parameters/stale"
          responses:
            "200":
              description: Every service, by name.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/ServiceList" }
            default: { $ref: "#/components/responses/Error" }
        post:
          operationId: createService
          tags: [services]
          summary: Creates a service from its spec (revision 1).
          parameters:
            - $ref: "#/components/parameters/idempotencyKey"
          requestBody:
            required: true
            content:
              application/yaml:
                schema: { type: string, description: "The service spec (Docs/SPEC.md)." }
              application/json:
                schema: { type: object, description: "The service spec (Docs/SPEC.md)." }
          responses:
            "201":
              description: Created and applied on the answering node.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/ServiceDetail" }
            default: { $ref: "#/components/responses/Error" }
      /v1/services/{name}:
        parameters:
          - $ref: "#/components/parameters/serviceName"
        get:
          operationId: getService
          tags: [services]
          parameters:
            - $ref: "#/components/parameters/stale"
          responses:
            "200":
              description: The service with its revisions, tasks and routes.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/ServiceDetail" }
            default: { $ref: "#/components/responses/Error" }
        delete:
          operationId: deleteService
          tags: [services]
          summary: Drains and stops the service's tasks, then removes it.
          parameters:
            - $ref: "#/components/parameters/idempotencyKey"
          responses:
            "200":
              description: >-
                `deleting` with the service while its tasks drain, or `deleted` once it is gone
                (at once when it had no task).
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/ServiceDeletion" }
            default: { $ref: "#/components/responses/Error" }
      /v1/services/{name}/scale:
        parameters:
          - $ref: "#/components/parameters/serviceName"
        put:
          operationId: scaleService
          tags: [services]
          parameters:
            - $ref: "#/components/parameters/idempotencyKey"
          requestBody:
            required: true
            content:
              application/json:
                schema: { $ref: "#/components/schemas/ScaleRequest" }
          responses:
            "200":
              description: The service with its new desired count.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/ServiceDetail" }
            default: { $ref: "#/components/responses/Error" }
      /v1/services/{name}/spec:
        parameters:
          - $ref: "#/components/parameters/serviceName"
        get:
          operationId: getServiceSpec
          tags: [services]
          summary: The serving revision's spec as YAML (what `teal deploy --set` starts from).
          parameters:
            - $ref: "#/components/parameters/stale"
          responses:
            "200":
              description: The spec.
              content:
                application/yaml:
                  schema: { type: string }
            default: { $ref: "#/components/responses/Error" }
      /v1/services/{name}/deployments:
        parameters:
          - $ref: "#/components/parameters/serviceName"
        post:
          operationId: submitDeployment
          tags: [deployments]
          summary: Starts a blue/green deployment to a new spec of the service.
          parameters:
            - $ref: "#/components/parameters/idempotencyKey"
            - name: supersede
              in: query
              description: "`true` rolls back a deployment in progress first."
              schema: { type: string, enum: ["true", "false"] }
          requestBody:
            required: true
            content:
              application/yaml:
                schema: { type: string, description: "The new service spec (Docs/SPEC.md)." }
              application/json:
                schema: { type: object, description: "The new service spec (Docs/SPEC.md)." }
          responses:
            "201":
              description: The deployment, as applied on the answering node.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/DeploymentView" }
            default: { $ref: "#/components/responses/Error" }
      /v1/tasks:
        get:
          operationId: listTasks
          tags: [services]
          parameters:
            - $ref: "#/components/parameters/stale"
            - name: service
              in: query
              schema: { type: string }
            - name: node
              in: query
              schema: { type: string }
          responses:
            "200":
              description: Tasks, by service, revision and sequence.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/TaskList" }
            default: { $ref: "#/components/responses/Error" }
      /v1/events:
        get:
          operationId: listEvents
          tags: [cluster]
          parameters:
            - $ref: "#/components/parameters/stale"
            - name: service
              in: query
              schema: { type: string }
            - name: after
              in: query
              description: Only events recorded after this log index.
              schema: { type: integer, minimum: 0 }
            - name: limit
              in: query
              schema: { type: integer, minimum: 1, maximum: 1000 }
          responses:
            "200":
              description: Events in log order.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/EventList" }
            default: { $ref: "#/components/responses/Error" }
      /v1/deployments:
        get:
          operationId: listDeployments
          tags: [deployments]
          parameters:
            - $ref: "#/components/parameters/stale"
            - name: service
              in: query
              schema: { type: string }
          responses:
            "200":
              description: Held deployments and summaries of finished ones, newest first.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/DeploymentList" }
            default: { $ref: "#/components/responses/Error" }
      /v1/deployments/{id}:
        parameters:
          - $ref: "#/components/parameters/deploymentID"
        get:
          operationId: getDeployment
          tags: [deployments]
          parameters:
            - $ref: "#/components/parameters/stale"
          responses:
            "200":
              description: The deployment.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/DeploymentView" }
            default: { $ref: "#/components/responses/Error" }
      /v1/deployments/{id}/{action}:
        parameters:
          - $ref: "#/components/parameters/deploymentID"
          - name: action
            in: path
            required: true
            schema: { type: string, enum: [stop, rollback, pause, continue, promote, retry] }
        post:
          operationId: deploymentAction
          tags: [deployments]
          summary: An operator's action on a deployment; 409 with the engine's reason when refused.
          parameters:
            - $ref: "#/components/parameters/idempotencyKey"
          responses:
            "200":
              description: The deployment after the action.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/DeploymentView" }
            "201":
              description: "`retry`: the new deployment."
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/DeploymentView" }
            default: { $ref: "#/components/responses/Error" }
      /v1/variables:
        get:
          operationId: listVariables
          tags: [variables]
          summary: Variable paths and versions (no values), sorted by UTF-8 bytes, a page at a time.
          parameters:
            - $ref: "#/components/parameters/stale"
            - name: prefix
              in: query
              schema: { type: string }
            - name: after
              in: query
              description: The `next` of the previous page.
              schema: { type: string }
            - name: limit
              in: query
              schema: { type: integer, minimum: 1, maximum: 1000 }
          responses:
            "200":
              description: One page.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/VariableList" }
            default: { $ref: "#/components/responses/Error" }
      /v1/variables/{path}:
        parameters:
          - name: path
            in: path
            required: true
            description: >-
              1-256 bytes of `[A-Za-z0-9._/-]`, slashes included (no leading or trailing `/`, no `//`,
              no `.` or `..` segment).
            x-teal-rest-of-path: true
            schema: { type: string, maxLength: 256 }
        get:
          operationId: getVariable
          tags: [variables]
          parameters:
            - $ref: "#/components/parameters/stale"
          responses:
            "200":
              description: The variable.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/VariableView" }
            default: { $ref: "#/components/responses/Error" }
        put:
          operationId: putVariable
          tags: [variables]
          summary: Writes a variable; with `cas`, only if it is at that version (0 = only if absent).
          parameters:
            - $ref: "#/components/parameters/idempotencyKey"
            - $ref: "#/components/parameters/cas"
          requestBody:
            required: true
            content:
              application/json:
                schema: { $ref: "#/components/schemas/VariableWrite" }
          responses:
            "200":
              description: Written; `version` is the log index of the write.
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/VariableView" }
            default: { $ref: "#/components/responses/Error" }
        delete:
          operationId: deleteVariable
          tags: [variables]
          parameters:
            - $ref: "#/components/parameters/idempotencyKey"
            - $ref: "#/components/parameters/cas"
          responses:
            "200":
              description: Deleted; `version` is the version it had (no `value`).
              content:
                application/json:
                  schema: { $ref: "#/components/schemas/VariableView" }
            default: { $ref: "#/components/responses/Error" }
    components:
      securitySchemes:
        bearer:
          type: http
          scheme: bearer
          description: The cluster's token (`<cluster dir>/token`, or `TEAL_TOKEN`).
      parameters:
        stale:
          name: stale
          in: query
          description: "`true` answers from the node's applied state without a ReadIndex round."
          schema: { type: string, enum: ["true", "false"] }
        idempotencyKey:
          name: Idempotency-Key
          in: header
          description: >-
            The same key with the same body gets the first answer; with another body 422
            `idempotency_mismatch`. At most 255 characters.
          schema: { type: string, maxLength: 255 }
        serviceName:
          name: name
          in: path
          required: true
          schema: { type: string }
        deploymentID:
          name: id
          in: path
          required: true
          description: "`<service>-<number>`, e.g. `web-2`."
          schema: { type: string }
        memberID:
          name: id
          in: path
          required: true
          description: "A node id: 1-63 characters of `a-z`, `0-9`, `-`, not starting with `-`."
          schema: { type: string }
        cas:
          name: cas
          in: query
          description: >-
            Compare-and-set: act only if the variable is at this version (0: only if it does not exist);
            otherwise 409 `version_mismatch` with the current version in the body.
          schema: { type: integer, minimum: 0 }
      responses:
        Error:
          description: >-
            An error: 400 bad_request, 401 unauthorized, 403 forbidden, 404 not_found, 409 conflict,
            409 version_mismatch (with `version`), 413 too_large, 422 invalid_spec or
            idempotency_mismatch, 503 no_leader, unavailable or outcome_unknown (with Retry-After),
            500 internal.
          content:
            application/json:
              schema: { $ref: "#/components/schemas/ErrorBody" }
      schemas:
        ErrorBody:
          type: object
          additionalProperties: false
          required: [error]
          properties:
            error:
              type: object
              additionalProperties: false
              required: [code, message]
              properties:
                code: { type: string }
                message: { type: string }
                field: { type: string }
            version:
              $ref: "#/components/schemas/Index"
              description: On `version_mismatch` only, the current version (0 when the object is absent).
        HealthResponse:
          type: object
          additionalProperties: false
          required: [status, node]
          properties:
            status: { type: string, enum: [ok] }
            node: { type: string }
        ReadyResponse:
          type: object
          additionalProperties: false
          required: [ready, node]
          properties:
            ready: { type: boolean }
            node: { type: string }
            leader: { type: string }
        ClusterStatus:
          type: object
          additionalProperties: false
          required: [term, commitIndex, appliedIndex, members]
          properties:
            leader: { type: string }
            term: { $ref: "#/components/schemas/Index" }
            commitIndex: { $ref: "#/components/schemas/Index" }
            appliedIndex: { $ref: "#/components/schemas/Index" }
            members:
              type: array
              items: { $ref: "#/components/schemas/ClusterMember" }
        ClusterMember:
          type: object
          additionalProperties: false
          required: [id, address, state, role, api]
          properties:
            id: { type: string }
            address: { type: string }
            state:
              type: string
              enum: [up, down]
              description: Committed liveness (`nodeDown` / `nodeUp` in the log).
            role: { type: string, enum: [leader, follower, candidate, learner, unknown] }
            api: { type: string, description: "e.g. `http://127.0.0.1:7070`" }
        ClusterStateDigest:
          type: object
          additionalProperties: false
          required: [node, appliedIndex, stateHash]
          properties:
            node: { type: string }
            appliedIndex: { $ref: "#/components/schemas/Index" }
            stateHash: { type: string, pattern: "^[0-9a-f]{64}$" }
        Index:
          type: integer
          minimum: 0
          description: An unsigned 64-bit log index, term or generation.
        Time:
          type: string
          format: date-time
        ServiceList:
          type: object
          additionalProperties: false
          required: [services]
          properties:
            services:
              type: array
              items: { $ref: "#/components/schemas/ServiceSummary" }
        ServiceSummary:
          type: object
          additionalProperties: false
          required: [name, desiredCount, runningCount, healthyCount, currentRevision, productionPort, testPort]
          properties:
            name: { type: string }
            desiredCount: { type: integer, minimum: 0 }
            runningCount: { type: integer, minimum: 0 }
            healthyCount: { type: integer, minimum: 0 }
            currentRevision: { type: string, description: "e.g. `web:1`" }
            productionPort: { type: integer, minimum: 0, maximum: 65535 }
            testPort: { type: integer, minimum: 0, maximum: 65535 }
        ServiceDetail:
          type: object
          additionalProperties: false
          required:
            - name
            - desiredCount
            - runningCount
            - healthyCount
            - currentRevision
            - productionPort
            - testPort
            - revisions
            - tasks
            - routes
          properties:
            name: { type: string }
            desiredCount: { type: integer, minimum: 0 }
            runningCount: { type: integer, minimum: 0 }
            healthyCount: { type: integer, minimum: 0 }
            currentRevision: { type: string }
            productionPort: { type: integer, minimum: 0, maximum: 65535 }
            testPort: { type: integer, minimum: 0, maximum: 65535 }
            revisions:
              type: array
              description: Oldest first.
              items: { $ref: "#/components/schemas/RevisionView" }
            tasks:
              type: array
              items: { $ref: "#/components/schemas/TaskView" }
            routes: { $ref: "#/components/schemas/RoutesView" }
        ServiceDeletion:
          type: object
          additionalProperties: false
          required: [name, status]
          properties:
            name: { type: string }
            status: { type: string, enum: [deleting, deleted] }
            service:
              $ref: "#/components/schemas/ServiceDetail"
              description: While `deleting`, the service with its draining tasks.
        RevisionView:
          type: object
          additionalProperties: false
          required: [id, number, digest, createdAt]
          properties:
            id: { type: string }
            number: { type: integer, minimum: 1 }
            digest: { type: string }
            createdAt: { $ref: "#/components/schemas/Time" }
        RoutesView:
          type: object
          additionalProperties: false
          required: [generation, production, test, targets]
          properties:
            generation: { $ref: "#/components/schemas/Index" }
            production:
              type: object
              description: Revision id → percent of the production listener's traffic.
              additionalProperties: { type: number, minimum: 0, maximum: 100 }
            test:
              type: object
              description: Revision id → percent of the test listener's traffic.
              additionalProperties: { type: number, minimum: 0, maximum: 100 }
            targets:
              type: array
              items: { $ref: "#/components/schemas/RouteTarget" }
        RouteTarget:
          type: object
          additionalProperties: false
          required: [task, node, address, port, revision]
          properties:
            task: { type: string }
            node: { type: string }
            address: { type: string }
            port: { type: integer, minimum: 0, maximum: 65535 }
            revision: { type: string }
        ScaleRequest:
          type: object
          additionalProperties: false
          required: [desiredCount]
          properties:
            desiredCount: { type: integer, minimum: 0 }
        TaskList:
          type: object
          additionalProperties: false
          required: [tasks]
          properties:
            tasks:
              type: array
              items: { $ref: "#/components/schemas/TaskView" }
        TaskView:
          type: object
          additionalProperties: false
          required: [id, service, revision, node, desired, state, healthy, address, port]
          properties:
            id: { type: string, description: "`web.1.7`: service, revision number, sequence." }
            service: { type: string }
            revision: { type: string }
            node: { type: string }
            desired: { type: string, enum: [running, draining, stopping] }
            state: { type: string, enum: [pending, starting, running, exited] }
            healthy: { type: boolean }
            address: { type: string }
            port: { type: integer, minimum: 0, maximum: 65535, description: 0 until the node reported it. }
            startedAt: { $ref: "#/components/schemas/Time" }
        EventList:
          type: object
          additionalProperties: false
          required: [events]
          properties:
            events:
              type: array
              items: { $ref: "#/components/schemas/EventView" }
        EventView:
          type: object
          additionalProperties: false
          required: [index, time, kind, message]
          properties:
            index: { $ref: "#/components/schemas/Index" }
            time: { $ref: "#/components/schemas/Time" }
            service: { type: string }
            kind: { type: string, description: "e.g. `serviceCreated`, `taskStarted`, `nodeDown`" }
            message: { type: string }
        DeploymentList:
          type: object
          additionalProperties: false
          required: [deployments]
          properties:
            deployments:
              type: array
              items: { $ref: "#/components/schemas/DeploymentSummaryView" }
        DeploymentStatus:
          type: string
          enum:
            [PENDING, IN_PROGRESS, STOP_REQUESTED, ROLLBACK_REQUESTED, ROLLBACK_IN_PROGRESS, SUCCESSFUL, STOPPED,
              ROLLBACK_SUCCESSFUL, ROLLBACK_FAILED]
        DeploymentSummaryView:
          type: object
          additionalProperties: false
          required: [id, service, status, blue, green, createdAt, updatedAt]
          properties:
            id: { type: string }
            service: { type: string }
            status: { $ref: "#/components/schemas/DeploymentStatus" }
            stage: { type: string }
            blue: { type: string }
            green: { type: string }
            createdAt: { $ref: "#/components/schemas/Time" }
            updatedAt: { $ref: "#/components/schemas/Time" }
        DeploymentView:
          type: object
          additionalProperties: false
          required:
            [id, service, status, blue, green, strategy, createdAt, updatedAt, stageTimeline, weights, hooks, tasks,
              recent]
          properties:
            id: { type: string }
            service: { type: string }
            status: { $ref: "#/components/schemas/DeploymentStatus" }
            stage: { type: string, description: "The ECS lifecycle stage, e.g. `BAKE_TIME`." }
            blue: { type: string }
            green: { type: string }
            strategy: { type: string, enum: [BLUE_GREEN, CANARY, LINEAR, STEPS] }
            createdAt: { $ref: "#/components/schemas/Time" }
            updatedAt: { $ref: "#/components/schemas/Time" }
            stageTimeline:
              type: array
              items:
                type: object
                additionalProperties: false
                required: [stage, enteredAt]
                properties:
                  stage: { type: string }
                  enteredAt: { $ref: "#/components/schemas/Time" }
            weights:
              type: object
              additionalProperties: false
              required: [production, test, generation]
              properties:
                production: { $ref: "#/components/schemas/WeightPair" }
                test: { $ref: "#/components/schemas/WeightPair" }
                generation: { $ref: "#/components/schemas/Index" }
            bake:
              type: object
              additionalProperties: false
              required: [seconds]
              properties:
                seconds: { type: number, minimum: 0 }
                startedAt: { $ref: "#/components/schemas/Time" }
                endsAt: { $ref: "#/components/schemas/Time" }
            hooks:
              type: array
              items:
                type: object
                additionalProperties: false
                required: [stage, executionId, attempts]
                properties:
                  stage: { type: string }
                  executionId: { type: string }
                  attempts: { type: integer, minimum: 0 }
                  result: { type: string }
            tasks:
              type: array
              items:
                type: object
                additionalProperties: false
                required: [revision, node, running, healthy]
                properties:
                  revision: { type: string }
                  node: { type: string }
                  running: { type: integer, minimum: 0 }
                  healthy: { type: integer, minimum: 0 }
            controller:
              type: object
              additionalProperties: false
              required: [node, term]
              description: The leader that drives the deployment, and its term.
              properties:
                node: { type: string }
                term: { $ref: "#/components/schemas/Index" }
            pausedBy: { type: string }
            reason: { type: string }
            recent:
              type: array
              items:
                type: object
                additionalProperties: false
                required: [at, message]
                properties:
                  at: { $ref: "#/components/schemas/Time" }
                  message: { type: string }
        WeightPair:
          type: object
          additionalProperties: false
          required: [blue, green]
          properties:
            blue: { type: number, minimum: 0, maximum: 100 }
            green: { type: number, minimum: 0, maximum: 100 }
        VariableWrite:
          type: object
          additionalProperties: false
          required: [value]
          properties:
            value: { type: string, description: "At most 65,536 bytes of UTF-8." }
        VariableView:
          type: object
          additionalProperties: false
          required: [path, version]
          properties:
            path: { type: string }
            value: { type: string, description: Absent in the answer to a delete. }
            version: { $ref: "#/components/schemas/Index" }
        VariableList:
          type: object
          additionalProperties: false
          required: [variables]
          properties:
            variables:
              type: array
              items:
                type: object
                additionalProperties: false
                required: [path, version]
                properties:
                  path: { type: string }
                  version: { $ref: "#/components/schemas/Index" }
            next: { type: string, description: Present when more match; pass it as `after`. }
        MemberAddRequest:
          type: object
          additionalProperties: false
          required: [id, address]
          properties:
            id: { type: string, description: "The new node's id; never one that was removed." }
            address: { type: string, description: "IPv4 or IPv6 literal the node binds and dials from." }
            peerPort: { type: integer, minimum: 1, maximum: 65535, description: "Default: the answering node's." }
            apiPort: { type: integer, minimum: 1, maximum: 65535, description: "Default: the answering node's." }
        MembershipView:
          type: object
          additionalProperties: false
          required: [members, removed]
          properties:
            members:
              type: array
              description: The Raft configuration the answering node knows, by id.
              items: { $ref: "#/components/schemas/MembershipMember" }
            change: { $ref: "#/components/schemas/MemberChangeView" }
            last: { $ref: "#/components/schemas/MemberChangeView" }
            removed:
              type: array
              description: Ids removed from this cluster; never admitted again.
              items: { type: string }
        MembershipMember:
          type: object
          additionalProperties: false
          required: [id, role, address, api, state]
          properties:
            id: { type: string }
            role: { type: string, enum: [voter, learner] }
            address: { type: string, description: Empty when unknown. }
            peerPort: { type: integer }
            api: { type: string, description: "e.g. `http://127.0.0.4:7070`; empty when unknown." }
            state:
              type: string
              enum: [up, down, unknown]
              description: Committed liveness; `unknown` before the member announced itself.
        MemberChangeView:
          type: object
          additionalProperties: false
          required: [action, id, requestedAt]
          properties:
            action: { type: string, enum: [add, remove] }
            id: { type: string }
            requestedAt: { $ref: "#/components/schemas/Time" }
            finishedAt: { $ref: "#/components/schemas/Time" }
            error: { type: string, description: Why a finished change could not be made. }

    """#
}
