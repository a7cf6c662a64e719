// The dashboard (`sbworker dashboard`) as a container app of its own, deployed only when main.bicep's
// deployDashboard is true. It runs the worker's image with other arguments, behind Container Apps authentication
// with Entra ID: the platform signs people in before any request reaches the container, and the dashboard
// trusts the identity headers the platform sets (--auth entra) and answers only to the app's own host name.
// Its identity is a user-assigned one like the worker's, with read roles only: Durable Task Data Reader on the
// task hub and Service Bus Data Receiver on what the worker reads (peeking needs Listen; no narrower role
// exists). With allowActions it may also change things (terminate, purge, resubmit, publish starts and
// approvals): Durable Task Data Contributor and Service Bus Data Sender, and users still need the app role
// actionRole in their token.

@description('Location of the app and its identity.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Container app name (its ingress host name is <name>.<environment default domain>).')
param name string

@description('User-assigned identity name.')
param identityName string

@description('Container Apps environment id.')
param environmentId string

@description('The environment default domain (monitoring module output).')
param environmentDefaultDomain string

@description('Login server of the registry the image is pulled from.')
param registryServer string

@description('Name of that registry (the AcrPull assignment).')
param registryName string

@description('Image to run (the worker image); empty before azd has pushed one.')
param image string = ''

@description('Durable Task Scheduler name.')
param schedulerName string

@description('Task hub name.')
param taskHubName string

@description('Durable Task Scheduler endpoint, https://...')
param dtsEndpoint string

@description('Service Bus namespace short name.')
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

@description('Queue only the worker reads, where early approvals wait (topic form).')
param retryQueueName string = ''

@description('Client id of the Entra ID app registration users sign in to (Container Apps authentication).')
param entraClientId string

@secure()
@description('A client secret of that app registration.')
param entraClientSecret string

@description('Allow changes from the dashboard (roles to write, and --allow-actions); read-only when false.')
param allowActions bool = false

@description('The app role (in the app registration) a signed-in user needs for changes.')
param actionRole string = 'Dashboard.Operator'

@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
@description('LOG_LEVEL (the audit lines are INFO).')
param logLevel string = 'INFO'

var port = 8082
var host = '${name}.${environmentDefaultDomain}'
var authSecretName = 'microsoft-provider-authentication-secret'
var isTopic = serviceBusSource == 'topic'
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'

// Built-in role ids, https://learn.microsoft.com/azure/role-based-access-control/built-in-roles: Integration
// (Durable Task Data Reader, Durable Task Data Contributor, Azure Service Bus Data Receiver / Sender) and
// Containers (AcrPull).
var durableTaskDataReaderRoleId = 'd6a5505f-6ebb-45a4-896e-ac8274cfc0ac'
var durableTaskDataContributorRoleId = '0ad04412-c4d5-4796-b79c-f76d14c8d402'
var serviceBusDataReceiverRoleId = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
var serviceBusDataSenderRoleId = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource scheduler 'Microsoft.DurableTask/schedulers@2026-02-01' existing = {
  name: schedulerName
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2026-02-01' existing = {
  parent: scheduler
  name: taskHubName
}

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' existing = {
  name: serviceBusNamespaceName
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = if (!isTopic) {
  parent: namespace
  name: queueName
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' existing = if (isTopic) {
  parent: namespace
  name: topicName
}

resource subscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' existing = if (isTopic) {
  parent: topic
  name: subscriptionName
}

resource retryQueue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = if (isTopic) {
  parent: namespace
  name: retryQueueName
}

resource pull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, identity.id, acrPullRoleId)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// --- Durable Task: read, or with allowActions read and write ------------------------------------------------

resource dtsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!allowActions) {
  name: guid(taskHub.id, identity.id, durableTaskDataReaderRoleId)
  scope: taskHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataReaderRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource dtsContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (allowActions) {
  name: guid(taskHub.id, identity.id, durableTaskDataContributorRoleId)
  scope: taskHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributorRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// --- Service Bus: peek what the worker reads (and its dead letters); with allowActions, send to it -----------

resource queueReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!isTopic) {
  name: guid(queue.id, identity.id, serviceBusDataReceiverRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiverRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!isTopic && allowActions) {
  name: guid(queue.id, identity.id, serviceBusDataSenderRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource subscriptionReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic) {
  name: guid(subscription.id, identity.id, serviceBusDataReceiverRoleId)
  scope: subscription
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiverRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource retryReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic) {
  name: guid(retryQueue.id, identity.id, serviceBusDataReceiverRoleId)
  scope: retryQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiverRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Starts and approvals are published to the topic; resubmitted dead letters go to the retry queue.
resource topicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic && allowActions) {
  name: guid(topic.id, identity.id, serviceBusDataSenderRoleId)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource retrySender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic && allowActions) {
  name: guid(retryQueue.id, identity.id, serviceBusDataSenderRoleId)
  scope: retryQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// --- the app --------------------------------------------------------------------------------------------------

var clientId = identity.properties.clientId

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

resource app 'Microsoft.App/containerApps@2025-01-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environmentId
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: port
        transport: 'auto'
        allowInsecure: false
      }
      registries: [
        {
          server: registryServer
          identity: identity.id
        }
      ]
      secrets: [
        {
          name: authSecretName
          value: entraClientSecret
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'dashboard'
          image: empty(image) ? placeholderImage : image
          // The image's entrypoint is `sbworker`; these replace its `run`.
          args: [
            'dashboard'
            '--host'
            '0.0.0.0'
            '--port'
            string(port)
            '--allow-remote'
            '--auth'
            'entra'
            '--allowed-host'
            host
            '--action-role'
            actionRole
            allowActions ? '--allow-actions' : '--read-only'
          ]
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
          env: concat(isTopic ? topicEnv : queueEnv, [
            {
              name: 'DTS_CONNECTION_STRING'
              value: 'Endpoint=${dtsEndpoint};Authentication=ManagedIdentity;ClientID=${clientId}'
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
              value: clientId
            }
            {
              name: 'LOG_LEVEL'
              value: logLevel
            }
          ])
          // TCP: an HTTP probe would come with the pod's address as its Host, which the dashboard refuses (421).
          probes: empty(image) ? [] : [
            {
              type: 'Liveness'
              tcpSocket: {
                port: port
              }
              periodSeconds: 15
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              tcpSocket: {
                port: port
              }
              periodSeconds: 10
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: 1
      }
    }
  }
  dependsOn: [
    pull
  ]
}

// Container Apps authentication: nobody reaches the container without signing in to the app registration.
resource auth 'Microsoft.App/containerApps/authConfigs@2025-01-01' = {
  parent: app
  name: 'current'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: entraClientId
          clientSecretSettingName: authSecretName
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${entraClientId}'
          ]
        }
      }
    }
  }
}

output name string = app.name
output url string = 'https://${host}'
output principalId string = identity.properties.principalId
