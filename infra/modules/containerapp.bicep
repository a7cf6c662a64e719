// The worker container app: user-assigned identities, every environment variable the code reads
// (tests/deploy checks this against sbworker.core.config.ENV_VARS), health probes and KEDA azure-servicebus
// scale rules that authenticate with a managed identity instead of a connection string.
// Queue form: SERVICEBUS_QUEUE and one rule on the queue. Topic form: SERVICEBUS_TOPIC, SERVICEBUS_SUBSCRIPTION
// and SERVICEBUS_RETRY_QUEUE, and one rule on the subscription plus one on the retry queue.
// Session mode (requiresSession): KEDA's azure-servicebus scaler counts active messages, not sessions (it has no
// session count: kedacore/keda#1479, and Service Bus offers none to read: Azure/azure-service-bus#728), while a
// replica works on MAX_CONCURRENT_SESSIONS sessions at once. So a replica is given that many sessions' worth of
// messages before KEDA adds one; replicas beyond the sessions that have messages only wait for one (cap them with
// maxReplicas when a few sessions carry most of the traffic).
// Its one secret is the Application Insights connection string (traces and metrics, see README#observability);
// the resource takes Entra ID only, so the exporters authenticate with the worker identity.

@description('Location of the app.')
param location string

@description('Tags applied to the app (must include azd-service-name).')
param tags object

@description('Container app name.')
param name string

@description('Container Apps environment id.')
param environmentId string

@description('Application Insights component (in this resource group) that receives traces and metrics.')
param appInsightsName string

@description('Registry login server the image is pulled from.')
param registryServer string

@description('Image to run; empty on the first provision, before azd has pushed one.')
param image string = ''

@description('Resource id of the identity the worker code uses.')
param workerIdentityId string

@description('Client id of the identity the worker code uses (AZURE_CLIENT_ID, DTS ClientID).')
param workerClientId string

@description('Resource id of the identity the KEDA scaler uses.')
param scalerIdentityId string

@description('Durable Task Scheduler endpoint, https://...')
param dtsEndpoint string

@description('Task hub name.')
param taskHubName string

@description('Service Bus namespace short name (the KEDA scaler wants the name, the worker the FQDN).')
param serviceBusNamespaceName string

@description('Service Bus namespace FQDN.')
param serviceBusNamespaceFqdn string

@allowed([
  'queue'
  'topic'
])
@description('What the worker reads: the queue, or the subscription of the topic plus the retry queue.')
param serviceBusSource string = 'queue'

@description('Queue the worker listens on (queue form).')
param queueName string = ''

@description('Topic whose subscription the worker reads (topic form).')
param topicName string = ''

@description('Subscription the worker reads (topic form).')
param subscriptionName string = ''

@description('Queue only the worker reads, where early approvals wait for their instance (topic form).')
param retryQueueName string = ''

@description('Session mode: the entities require sessions (SERVICEBUS_SESSIONS).')
param requiresSession bool = false

@minValue(0)
@description('Minimum replicas. Keep at least 1: the co-hosted durabletask worker must run to fire timers.')
param minReplicas int = 1

@minValue(1)
@description('Maximum replicas.')
param maxReplicas int = 10

@minValue(1)
@description('Active messages per replica before KEDA adds one (without sessions).')
param messagesPerReplica int = 20

@minValue(1)
@description('Session mode: active messages counted per session a replica holds (a start and its approval) when deciding to add one.')
param messagesPerSession int = 2

// Listener tuning; the same values as the code defaults in sbworker/core/config.py.
@description('MAX_CONCURRENT_MESSAGES')
param maxConcurrentMessages int = 128
@description('PREFETCH_COUNT')
param prefetchCount int = 100
@description('WORKER_THREADS')
param workerThreads int = 64
@description('WORKER_MAX_CONCURRENT_ORCHESTRATIONS')
param workerMaxConcurrentOrchestrations int = 128
@description('WORKER_MAX_CONCURRENT_ACTIVITIES')
param workerMaxConcurrentActivities int = 128
@description('MAX_MESSAGE_BYTES')
param maxMessageBytes int = 262144
@description('MAX_INPUT_BYTES')
param maxInputBytes int = 524288
@description('MAX_EVENT_BYTES')
param maxEventBytes int = 65536
@description('DTS_MAX_RECEIVE_BYTES')
param dtsMaxReceiveBytes int = 16777216
@description('APPROVAL_NOT_FOUND_WINDOW_SECONDS')
param approvalNotFoundWindowSeconds int = 300
@description('SHUTDOWN_GRACE_SECONDS')
param shutdownGraceSeconds int = 30
@description('MAX_CONCURRENT_SESSIONS (session mode)')
param maxConcurrentSessions int = 32
@description('SESSION_IDLE_SECONDS (session mode; a number of seconds, fractions allowed)')
param sessionIdleSeconds string = '0.1'

@description('LOG_LEVEL')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = 'INFO'

var healthPort = 8000
var appInsightsSecret = 'appinsights-connection-string'
var isTopic = serviceBusSource == 'topic'
// What KEDA's messageCount is per replica (see the note at the top for session mode).
var messagesBeforeScaleOut = requiresSession ? maxConcurrentSessions * messagesPerSession : messagesPerReplica

// What the worker reads: exactly one form's variables are set (the code refuses a mix).
var queueEnv = [
  {
    name: 'SERVICEBUS_QUEUE'
    value: queueName
  }
]
var topicEnv = [
  {
    name: 'SERVICEBUS_TOPIC'
    value: topicName
  }
  {
    name: 'SERVICEBUS_SUBSCRIPTION'
    value: subscriptionName
  }
  {
    name: 'SERVICEBUS_RETRY_QUEUE'
    value: retryQueueName
  }
]

// KEDA scales on the active messages of each entity the worker reads and takes the largest replica count.
var queueRules = [
  {
    name: 'servicebus-queue'
    custom: {
      type: 'azure-servicebus'
      identity: scalerIdentityId
      metadata: {
        namespace: serviceBusNamespaceName
        queueName: queueName
        messageCount: string(messagesBeforeScaleOut)
      }
    }
  }
]
var topicRules = [
  {
    name: 'servicebus-subscription'
    custom: {
      type: 'azure-servicebus'
      identity: scalerIdentityId
      metadata: {
        namespace: serviceBusNamespaceName
        topicName: topicName
        subscriptionName: subscriptionName
        messageCount: string(messagesBeforeScaleOut)
      }
    }
  }
  {
    name: 'servicebus-retry-queue'
    custom: {
      type: 'azure-servicebus'
      identity: scalerIdentityId
      metadata: {
        namespace: serviceBusNamespaceName
        queueName: retryQueueName
        messageCount: string(messagesBeforeScaleOut)
      }
    }
  }
]

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'
var realImage = !empty(image)

// The placeholder image does not serve /healthz, so probes are attached once azd has pushed the real image.
var probes = [
  {
    type: 'Liveness'
    httpGet: {
      path: '/healthz'
      port: healthPort
    }
    initialDelaySeconds: 10
    periodSeconds: 15
    failureThreshold: 3
    timeoutSeconds: 3
  }
  {
    type: 'Readiness'
    httpGet: {
      path: '/readyz'
      port: healthPort
    }
    initialDelaySeconds: 5
    periodSeconds: 10
    failureThreshold: 3
    timeoutSeconds: 3
  }
]

resource app 'Microsoft.App/containerApps@2025-01-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${workerIdentityId}': {}
      '${scalerIdentityId}': {}
    }
  }
  properties: {
    environmentId: environmentId
    configuration: {
      activeRevisionsMode: 'Single'
      registries: [
        {
          server: registryServer
          identity: workerIdentityId
        }
      ]
      secrets: [
        {
          name: appInsightsSecret
          value: appInsights.properties.ConnectionString
        }
      ]
    }
    template: {
      terminationGracePeriodSeconds: shutdownGraceSeconds + 15
      containers: [
        {
          name: 'worker'
          image: realImage ? image : placeholderImage
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
          env: concat(isTopic ? topicEnv : queueEnv, [
            {
              name: 'DTS_CONNECTION_STRING'
              value: 'Endpoint=${dtsEndpoint};Authentication=ManagedIdentity;ClientID=${workerClientId}'
            }
            {
              name: 'TASKHUB_NAME'
              value: taskHubName
            }
            {
              name: 'SERVICEBUS_NAMESPACE'
              value: serviceBusNamespaceFqdn
            }
            {
              name: 'SERVICEBUS_AUTHENTICATION'
              value: 'ManagedIdentity'
            }
            {
              name: 'AZURE_CLIENT_ID'
              value: workerClientId
            }
            {
              name: 'SERVICEBUS_SESSIONS'
              value: string(requiresSession)
            }
            {
              name: 'MAX_CONCURRENT_MESSAGES'
              value: string(maxConcurrentMessages)
            }
            {
              name: 'MAX_CONCURRENT_SESSIONS'
              value: string(maxConcurrentSessions)
            }
            {
              name: 'SESSION_IDLE_SECONDS'
              value: sessionIdleSeconds
            }
            {
              name: 'PREFETCH_COUNT'
              value: string(prefetchCount)
            }
            {
              name: 'WORKER_THREADS'
              value: string(workerThreads)
            }
            {
              name: 'WORKER_MAX_CONCURRENT_ORCHESTRATIONS'
              value: string(workerMaxConcurrentOrchestrations)
            }
            {
              name: 'WORKER_MAX_CONCURRENT_ACTIVITIES'
              value: string(workerMaxConcurrentActivities)
            }
            {
              name: 'MAX_MESSAGE_BYTES'
              value: string(maxMessageBytes)
            }
            {
              name: 'MAX_INPUT_BYTES'
              value: string(maxInputBytes)
            }
            {
              name: 'MAX_EVENT_BYTES'
              value: string(maxEventBytes)
            }
            {
              name: 'DTS_MAX_RECEIVE_BYTES'
              value: string(dtsMaxReceiveBytes)
            }
            {
              name: 'APPROVAL_NOT_FOUND_WINDOW_SECONDS'
              value: string(approvalNotFoundWindowSeconds)
            }
            {
              name: 'SHUTDOWN_GRACE_SECONDS'
              value: string(shutdownGraceSeconds)
            }
            {
              name: 'HEALTH_PORT'
              value: string(healthPort)
            }
            {
              name: 'LOG_LEVEL'
              value: logLevel
            }
            {
              name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
              secretRef: appInsightsSecret
            }
            {
              // Application Insights has local authentication disabled: the exporters sign in as AZURE_CLIENT_ID.
              name: 'APPLICATIONINSIGHTS_AUTHENTICATION'
              value: 'ManagedIdentity'
            }
          ])
          probes: realImage ? probes : []
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: isTopic ? topicRules : queueRules
      }
    }
  }
}

output name string = app.name
